# Sourced by .ci/run: a throwaway PostgreSQL server for the tests that need one.
# Debian's PostgreSQL (initdb, pg_ctl under /usr/lib/postgresql/*/bin; installed when missing), run
# as an unprivileged user on a socket in a temporary folder and a free port, stopped on exit.
# Exports EWG_TEST_PG_URL (a superuser URL the tests make their own databases with) and
# EWG_REQUIRE_PG=1 (so a test that needs the server fails here instead of skipping).

pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

start_postgres() {
    local bindir user run port
    bindir=$(pg_bindir)
    if [ -z "$bindir" ]; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "PostgreSQL is not installed and this user cannot install it: run 'apt-get install postgresql' as root." >&2
            return 1
        fi
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        bindir=$(pg_bindir)
    fi
    PG_ROOT=$(mktemp -d /tmp/ewg-ci-pg.XXXXXX)
    if [ "$(id -u)" -eq 0 ]; then  # initdb refuses root: the server runs as a user of its own
        user=ewgci
        id -u "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
        chown "$user" "$PG_ROOT"
        run=(runuser -u "$user" --)
    else
        user=$(id -un)
        run=()
    fi
    chmod 700 "$PG_ROOT"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "${run[@]}" "$bindir/initdb" -D "$PG_ROOT/data" -U "$user" -A trust -E UTF8 --no-sync >"$PG_ROOT/initdb.log" 2>&1 \
        || { cat "$PG_ROOT/initdb.log" >&2; return 1; }
    "${run[@]}" "$bindir/pg_ctl" -D "$PG_ROOT/data" -l "$PG_ROOT/server.log" -w -t 60 \
        -o "-k $PG_ROOT -p $port -c listen_addresses='' -c max_connections=300 -c fsync=off" start >/dev/null \
        || { cat "$PG_ROOT/server.log" >&2; return 1; }
    PG_RUN="${run[*]}"
    PG_BINDIR=$bindir
    export EWG_TEST_PG_URL="postgresql://$user@/postgres?host=$PG_ROOT&port=$port"
    export EWG_REQUIRE_PG=1
    echo "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') for the tests on $PG_ROOT port $port"
}

stop_postgres() {
    [ -n "${PG_ROOT:-}" ] || return 0
    # shellcheck disable=SC2086
    $PG_RUN "$PG_BINDIR/pg_ctl" -D "$PG_ROOT/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_ROOT"
}
