"""The PostgreSQL driver: how a site grows past one box.

Several hosts run one pipeline on one server. Nothing here serialises writers inside a process:
PostgreSQL's row locks do (claims take `FOR UPDATE SKIP LOCKED`, every fenced write keeps the
lease-token compare-and-swap). Connections are psycopg 3, one per thread, in autocommit with an
explicit transaction per `Unit`; a connection that broke is dropped and reopened with backoff
(tenacity), so a server restart costs the work in flight at that moment and nothing else.

Maintenance that must run once per site (source scans, pruning, rescue sweeps) is led by one host
at a time through a session advisory lock (`try_lead`), which moves when its holder's connection
dies. `notify`/`wait` carry wake-ups between hosts with LISTEN/NOTIFY; polling stays the fallback.
Credentials come from the URL, the standard PG* variables or ~/.pgpass (libpq reads them) and are
never printed: `describe()` drops the password.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pgerrors
from psycopg.types.numeric import FloatLoader
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from .base import Store
from .dialect import POSTGRESQL
from .postgres_schema import MIGRATIONS, SCHEMA_VERSION
from .types import DatabaseError, ReadInterrupted
from .unit import Unit

CHANNEL = "ewg"  # one LISTEN/NOTIFY channel (dialect.notify sends on it); the payload names what changed
_LEAD_NAMESPACE = 0x65776700  # "ewg\0": advisory lock keys are (namespace, hash of the role)
_MIGRATE_LOCK = 0x65776701
CONNECT_TIMEOUT_S = 5


def redact(url: str) -> str:
    """The URL without its password, for messages and `ewg status`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}"))


@functools.lru_cache(maxsize=1024)
def _row_class(names: tuple[str, ...]) -> type:
    index = {name: i for i, name in enumerate(names)}

    class Row(tuple):
        """A row read by position, by column name and with `dict(row)`, like sqlite3.Row."""

        __slots__ = ()

        def __getitem__(self, key: Any) -> Any:
            if isinstance(key, str):
                return tuple.__getitem__(self, index[key])
            return tuple.__getitem__(self, key)

        def keys(self) -> list[str]:
            return list(names)

    return Row


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Any]:
    return _row_class(tuple(col.name for col in cursor.description or ()))


class _Connection:
    """psycopg's connection with the two calls the shared SQL makes (execute, executemany)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self.raw.execute(sql, params or None)

    def executemany(self, sql: str, rows: Any) -> Any:
        cur = self.raw.cursor()
        cur.executemany(sql, rows)
        return cur

    def close(self) -> None:
        self.raw.close()


def _lost(exc: BaseException) -> bool:
    """The server went away or refused the connection (not a mistake in the SQL)."""
    return isinstance(exc, psycopg.OperationalError) and not isinstance(exc, pgerrors.QueryCanceled)


def _unreachable(url: str, exc: BaseException) -> DatabaseError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatabaseError(
        f"cannot reach the PostgreSQL database {redact(url)} ({first}). Check that the server runs and "
        "accepts this host (pg_hba.conf), and the user and password (PGUSER/PGPASSWORD or ~/.pgpass); "
        "nothing was changed."
    )


class PgReader:
    """A read-only connection of its own whose read another thread may cancel (the console's poll)."""

    dialect = POSTGRESQL  # the read side's SQL must not get SQLite's clauses (engine.db.queries)

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._conn = store._open_raw(read_only=True)
        self._cancelled = False

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._run(sql, params, all_rows=True)

    def read_one(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        return self._run(sql, params, all_rows=False)

    def _run(self, sql: str, params: Sequence[Any], all_rows: bool) -> Any:
        if self._cancelled:
            raise ReadInterrupted()
        if self._conn.closed or self._conn.broken:
            self._conn = self._store._open_raw(read_only=True)
        try:
            cur = self._conn.execute(POSTGRESQL.sql(sql), params or None)
            return cur.fetchall() if all_rows else cur.fetchone()
        except pgerrors.QueryCanceled:
            if self._cancelled:
                raise ReadInterrupted() from None
            raise

    def interrupt(self) -> None:
        self._cancelled = True
        with contextlib.suppress(Exception):
            self._conn.cancel_safe(timeout=2.0)

    def resume(self) -> None:
        self._cancelled = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()


class PostgresStore(Store):
    """One per process and server database; each thread gets its own connection."""

    backend = "postgresql"
    dialect = POSTGRESQL
    schema_target = SCHEMA_VERSION
    path = None  # no file on this host: disk checks look at the items folder instead
    supports_backup = False  # the server's own tools (pg_dump, base backups) own that
    busy_reason = "the database server could not be reached for a while (the engine reconnected)"

    def __init__(self, url: str, retry_for_s: float = 10.0, read_only: bool = False, **_ignored: Any) -> None:
        super().__init__()
        self.url = url
        self.read_only = read_only  # `--readonly`: the server refuses every write of this process
        self.retry_for_s = retry_for_s
        self._lead: psycopg.Connection | None = None
        self._listen: psycopg.Connection | None = None
        self._aux_lock = threading.Lock()
        self.unreachable_since: float | None = None  # set while the server cannot be reached

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def create(cls, url: str, **kw: Any) -> PostgresStore:
        """Make the ewg schema in an empty database; refuse one that already holds ewg's tables."""
        store = cls(url, **kw)
        store._check_reachable()
        if store.schema_version() > 0:
            store.close()
            raise DatabaseError(
                f"{redact(url)} already holds an ewg schema; refusing to initialise it again (its items "
                "would be shared with a second workspace). Point [paths] database at it from the existing "
                "workspace's ewg.toml, or create another database (createdb)."
            )
        store.migrate()
        return store

    @classmethod
    def open(cls, url: str, migrate: bool = True, **kw: Any) -> PostgresStore:
        store = cls(url, **kw)
        store._check_reachable()
        version = store.schema_version()
        if version == 0:
            store.close()
            raise DatabaseError(
                f"{redact(url)} holds no ewg schema. Create it with `ewg init DIR --database {redact(url)}`."
            )
        if version > SCHEMA_VERSION:
            store.close()
            raise DatabaseError(
                f"{redact(url)} has schema version {version}, newer than this ewg knows "
                f"({SCHEMA_VERSION}). Upgrade ewg on this host; do not run an older one against it."
            )
        if version < SCHEMA_VERSION and migrate:
            store.migrate()
        return store

    def _check_reachable(self) -> None:
        try:
            self.connection()
        except psycopg.Error as exc:
            self.close()
            raise _unreachable(self.url, exc) from None

    def describe(self) -> str:
        return redact(self.url)

    def server_version(self) -> str:
        return str(self.read_one("SHOW server_version")[0])

    # -- connections ----------------------------------------------------------------------
    def _open_raw(self, read_only: bool = False, application_name: str = "ewg") -> psycopg.Connection:
        conn = psycopg.connect(
            self.url,
            autocommit=True,
            row_factory=_row_factory,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=application_name,
        )
        # SUM over integers is numeric in PostgreSQL: read it as a float, as SQLite's REAL.
        conn.adapters.register_loader("numeric", FloatLoader)
        if read_only:
            conn.execute("SET default_transaction_read_only = on")
        return conn

    def _connect(self) -> _Connection:
        return _Connection(self._open_raw(read_only=self.read_only))

    def _healthy_connection(self) -> _Connection:
        """This thread's connection, reopened (with backoff, for up to retry_for_s) if it broke."""
        conn = self.connection()
        if not (conn.raw.closed or conn.raw.broken):
            return conn
        self._forget_connection()
        for attempt in Retrying(
            retry=retry_if_exception(_lost),
            stop=stop_after_delay(self.retry_for_s),
            wait=wait_exponential(multiplier=0.1, max=5.0),
            reraise=True,
        ):
            with attempt:
                try:
                    conn = self.connection()
                except psycopg.OperationalError:
                    self.busy_waits += 1
                    self.last_busy_at = time.time()
                    self.unreachable_since = self.unreachable_since or time.time()
                    self._local.conn = None
                    raise
        self.unreachable_since = None
        return conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Unit]:
        """One transaction. A broken connection is reopened before it starts; one that breaks inside
        it fails this unit (nothing of it committed) and the next unit reconnects."""
        conn = self._healthy_connection()
        try:
            with conn.raw.transaction():
                yield Unit(conn, POSTGRESQL)
        except psycopg.OperationalError:
            if conn.raw.broken or conn.raw.closed:
                self.unreachable_since = self.unreachable_since or time.time()
                self._forget_connection()
            raise

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._healthy_connection().execute(POSTGRESQL.sql(sql), params).fetchall()

    def read_one(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        return self._healthy_connection().execute(POSTGRESQL.sql(sql), params).fetchone()

    def reader(self) -> PgReader:
        return PgReader(self)

    def close(self) -> None:
        with self._aux_lock:
            for aux in (self._lead, self._listen):
                if aux is not None:
                    with contextlib.suppress(Exception):
                        aux.close()
            self._lead = self._listen = None
        super().close()

    # -- schema ---------------------------------------------------------------------------
    def schema_version(self) -> int:
        row = self.read_one("SELECT to_regclass('ewg_schema') IS NOT NULL")
        if not row[0]:
            return 0
        return int(self.read_one("SELECT version FROM ewg_schema")[0])

    def migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION one frozen step at a time, each in one transaction; hosts
        starting together queue on an advisory lock, and each re-reads the version under it."""
        for target in range(1, SCHEMA_VERSION + 1):
            with self.write() as unit:
                unit.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATE_LOCK,))
                exists = unit.execute("SELECT to_regclass('ewg_schema') IS NOT NULL").fetchone()[0]
                current = int(unit.execute("SELECT version FROM ewg_schema").fetchone()[0]) if exists else 0
                if current >= target:
                    continue
                for statement in MIGRATIONS[target]:
                    unit.execute(statement)
                if target == 1:
                    import uuid

                    unit.execute(
                        "INSERT INTO workspace (key, value) VALUES ('identity', ?)", (uuid.uuid4().hex,)
                    )
                unit.execute("UPDATE ewg_schema SET version = ?", (target,))

    # -- upkeep ---------------------------------------------------------------------------
    def backup(self, *_args: Any, **_kw: Any) -> None:
        """ewg does not copy a server's database; pg_dump or the server's base backups do."""
        return None

    def integrity_check(self) -> str:
        self.read_one("SELECT 1")
        return "ok"

    def vacuum(self) -> None:
        self._healthy_connection().execute("VACUUM")

    # -- many hosts -----------------------------------------------------------------------
    def try_lead(self, owner: str = "", dead_after: float | None = None, now: float | None = None) -> bool:
        """Hold (or take) the site's maintenance lead: a session advisory lock on a connection kept
        for it, released by the server when this process or its host dies. True while this process
        leads. A leader whose engine heartbeat is older than `dead_after` (a frozen host keeps its
        session, and so its lock) has that session ended, so the lead moves on."""
        with self._aux_lock:
            try:
                if self._lead is not None and not (self._lead.closed or self._lead.broken):
                    self._lead.execute("SELECT 1")
                    return True
                self._lead = self._open_raw(application_name=f"ewg lead {owner}"[:63])
                if self._take_lead():
                    return True
                if dead_after is not None and self._end_frozen_leader(dead_after, now or time.time()):
                    if self._take_lead():
                        return True
                self._lead.close()
                self._lead = None
                return False
            except psycopg.OperationalError:
                self._lead = None
                return False

    def _take_lead(self) -> bool:
        return bool(
            self._lead.execute("SELECT pg_try_advisory_lock(%s, 1)", (_LEAD_NAMESPACE,)).fetchone()[0]
        )

    def _end_frozen_leader(self, dead_after: float, now: float) -> bool:
        """End the lead session of an engine whose heartbeat stopped (True when one was ended)."""
        holder = self._lead.execute(
            "SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = 1 AND l.granted",
            (_LEAD_NAMESPACE,),
        ).fetchone()
        if holder is None:
            return True  # released meanwhile
        leader = holder[1].removeprefix("ewg lead ")
        beat = self._lead.execute("SELECT heartbeat_at FROM engines WHERE owner = %s", (leader,)).fetchone()
        if beat is None or beat[0] >= now - dead_after:
            return False  # alive (or not an engine this can judge): it keeps the lead
        self._lead.execute("SELECT pg_terminate_backend(%s)", (holder[0],))
        time.sleep(0.05)  # the server releases the lock as the session ends
        return True

    def wait(self, timeout: float) -> list[str]:
        """Block up to `timeout` seconds for wake-ups from any host; [] on timeout or a lost server."""
        with self._aux_lock:
            try:
                if self._listen is None or self._listen.closed or self._listen.broken:
                    self._listen = self._open_raw()
                    self._listen.execute(f"LISTEN {CHANNEL}")
                listen = self._listen
            except psycopg.OperationalError:
                self._listen = None
                time.sleep(min(timeout, 1.0))
                return []
        try:
            # Back at the first wake-up: the caller reads the database anyway, whatever it says.
            return [n.payload for n in listen.notifies(timeout=timeout, stop_after=1)]
        except psycopg.OperationalError:
            with self._aux_lock:
                self._listen = None
            return []
