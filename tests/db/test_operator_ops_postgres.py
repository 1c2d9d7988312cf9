"""The operator's named operations on a real PostgreSQL server: the same SQL text as on SQLite, and
the lock that makes a verb safe with many hosts (a second host's verb waits for the first's unit,
then plans from what it left; a change planned from the old row is refused).

The server is a throwaway one started here (initdb/pg_ctl under /usr/lib/postgresql/*/bin, run as an
unprivileged user on a private socket). The schema is the few tables the operations touch, written
for PostgreSQL by hand until engine/db/postgres.py brings the driver and its migrations. Skipped when
PostgreSQL or psycopg is missing, except in CI (`CI` set), where that is a failure.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from engine.db import operator as ops
from engine.db.dialect import POSTGRESQL
from engine.db.operator import ItemFilter, Term
from engine.db.unit import Unit

SCHEMA = """
CREATE TABLE items (id TEXT PRIMARY KEY, kind TEXT NOT NULL, parent_id TEXT, source TEXT NOT NULL DEFAULT '',
  show TEXT NOT NULL DEFAULT '', stage TEXT, next_stage TEXT, status TEXT NOT NULL,
  lease_token BIGINT NOT NULL DEFAULT 0, lease_owner TEXT, lease_expires_at DOUBLE PRECISION, error_class TEXT,
  error_message TEXT, error_detail TEXT, error_suggestion TEXT, error_at DOUBLE PRECISION,
  attempts INTEGER NOT NULL DEFAULT 0, rescues INTEGER NOT NULL DEFAULT 0,
  deadline_extension DOUBLE PRECISION NOT NULL DEFAULT 0, cancel_requested TEXT,
  cancel_requested_at DOUBLE PRECISION, verdict TEXT, blocked_reason TEXT,
  progress DOUBLE PRECISION NOT NULL DEFAULT 0, progress_message TEXT NOT NULL DEFAULT '',
  next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0, updated_at DOUBLE PRECISION NOT NULL DEFAULT 0,
  stage_pid INTEGER, stage_pgid INTEGER);
CREATE TABLE checkpoints (item_id TEXT NOT NULL, stage TEXT NOT NULL, manifest TEXT NOT NULL,
  created_at DOUBLE PRECISION NOT NULL, stale BOOLEAN NOT NULL DEFAULT FALSE, PRIMARY KEY (item_id, stage));
CREATE TABLE engine_state (key TEXT PRIMARY KEY, value TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '',
  actor TEXT NOT NULL DEFAULT '', at DOUBLE PRECISION NOT NULL DEFAULT 0);
"""

ITEMS = [  # id, kind, parent, show, stage, next_stage, status, lease_token, lease_owner
    ("e1", "episode", None, "Tech Talk", "discovered", "transcribed", "running", 5, "h2:1"),
    ("e2", "episode", None, "50% Off", None, "discovered", "failed", 0, None),
    ("e1__c01", "clip", "e1", "Tech Talk", None, "generated", "queued", 0, None),
    ("e3", "episode", None, "x", "done", None, "discarded", 0, "stale-owner"),
]


def _missing(why: str):
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run in CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def dsn():
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _missing("psycopg is not installed")
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        _missing("no initdb under /usr/lib/postgresql/*/bin")
    bindir = os.path.dirname(bins[-1])
    root = Path(
        tempfile.mkdtemp(prefix="ewg-pg-")
    )  # not under pytest's root-only folder: the server's user reads it
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = pwd.getpwnam("nobody")
        os.chmod(root, 0o755)
        shutil.chown(root, user.pw_uid, user.pw_gid)
        shutil.chown(sock, user.pw_uid, user.pw_gid)
        prefix = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, cwd=root)
        if done.returncode:
            pytest.fail(f"{' '.join(args[:1])} failed: {done.stderr or done.stdout}")

    run(f"{bindir}/initdb", "-D", str(data), "-U", "ewg", "--auth=trust")
    port = str(20000 + os.getpid() % 20000)
    options = f"-k {sock} -p {port} -c listen_addresses='' -c fsync=off"
    run(f"{bindir}/pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
    try:
        yield f"host={sock} port={port} user=ewg dbname=postgres"
    finally:
        run(f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def connect(dsn):
    import psycopg
    from psycopg.rows import dict_row

    opened = []

    def open_one():
        conn = psycopg.connect(dsn, row_factory=dict_row)
        opened.append(conn)
        return conn

    with open_one().transaction() as tx:
        conn = tx.connection
        conn.execute("DROP TABLE IF EXISTS items, checkpoints, engine_state")
        conn.execute(SCHEMA)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO items (id, kind, parent_id, show, stage, next_stage, status, lease_token, lease_owner)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                ITEMS,
            )
        conn.execute(
            "INSERT INTO checkpoints VALUES ('e1','transcribed','{}',1,TRUE),('e2','discovered','{}',1,FALSE)"
        )
    yield open_one
    for conn in opened:
        conn.close()


class Read:
    """A Readable over PostgreSQL, as the driver's will be: each read its own short transaction."""

    def __init__(self, conn) -> None:
        self.conn = conn

    def read(self, sql, params=()):
        with self.conn.transaction():
            return self.conn.execute(POSTGRESQL.sql(sql), params).fetchall()

    def read_one(self, sql, params=()):
        rows = self.read(sql, params)
        return rows[0] if rows else None


def test_the_selections_and_reads_run_on_postgresql(connect):
    db = Read(connect())

    def ids(*terms):
        return [i.id for i in ops.Unlocked(db).select_matching(ItemFilter(terms))]

    assert ids(Term("show", ("tech",))) == ["e1", "e1__c01"]  # any case, as on SQLite
    assert ids(Term("show", ("%",))) == ["e2"]  # the user's % is a character
    assert ids(
        Term("stage", ("transcribed",)), Term("kind", ("episode",)), Term("updated_before", (1.0,))
    ) == ["e1"]
    assert ids() == ["e1", "e1__c01", "e2"] and ids(Term("status", ("discarded",))) == ["e3"]
    assert [i.id for i in ops.Unlocked(db).select_clips_of(["e1"])] == ["e1__c01"]
    assert ops.read_kinds(db, ["e1", "nope"]) == {"e1": "episode"}
    assert ops.read_item_ids(db, kind="clip", parents=["e1"]) == ["e1__c01"]
    assert ops.read_item_ids(db, statuses=("failed", "discarded")) == ["e2", "e3"]
    assert [f.id for f in ops.read_failed(db)] == ["e2"]
    assert [(lease.id, lease.lease_token) for lease in ops.read_running_leases(db)] == [("e1", 5)]
    assert ops.read_stale_run_state(db) == ["e3"]
    assert ops.read_stale_checkpoints(db) == [("e1", "transcribed")]
    assert ops.read_paused(db) is False


def test_a_second_hosts_verb_waits_for_the_first_and_cannot_overwrite_it(connect):
    first, db = connect(), Read(connect())
    seen: dict = {}

    def second_host():
        conn = connect()
        with conn.transaction():
            unit = Unit(conn, POSTGRESQL)
            started = time.monotonic()
            (item,) = unit.select_items(["e1"])  # blocks on the first host's lock
            seen["waited"], seen["item"] = time.monotonic() - started, item
            seen["swap"] = unit.change_item("e1", "running", 5, {"status": "stopped"})  # planned before

    with first.transaction():
        unit = Unit(first, POSTGRESQL)
        (item,) = unit.select_items(["e1"])
        other = threading.Thread(target=second_host)
        other.start()
        time.sleep(0.5)
        assert "item" not in seen  # still waiting
        assert unit.change_item(
            "e1", item.status, item.lease_token, {"status": "queued", "lease_owner": None}, fence_out=True
        )
    other.join(30)
    assert seen["waited"] >= 0.4
    assert (seen["item"].status, seen["item"].lease_token) == ("queued", 6)  # planned from what it left
    assert seen["swap"] is False
    assert ops.Unlocked(db).select_items(["e1"])[0].status == "queued"


def test_the_writes_run_on_postgresql(connect):
    conn, db = connect(), Read(connect())
    with conn.transaction():
        unit = Unit(conn, POSTGRESQL)
        assert unit.mark_stale("e1", ["transcribed", "aligned"]) == 1 and unit.mark_stale("e2") == 1
        unit.record_skipped_stage("e2", "discovered", 3.0)  # the upsert: fresh again
        assert unit.hold_files("e1", ["cache"], "h1:1", "ana", 3.0) == ["cache"]
        assert unit.hold_files("e1", ["", "cache"], "h1:1", "ana", 3.0) == ["cache", ""]
    (held,) = ops.read_pending_removals(db)
    assert (held.item_id, held.owner, held.names) == ("e1", "h1:1", ("cache", ""))
    with conn.transaction():
        unit = Unit(conn, POSTGRESQL)
        assert not unit.release_files("e1", "other:1") and unit.release_files("e1", "h1:1")
        unit.hold_files("e2", ["x"], "dead:1", "bo", 4.0)
    (held,) = ops.read_pending_removals(db)
    with conn.transaction():
        unit = Unit(conn, POSTGRESQL)
        assert unit.finish_removal(held) and not unit.finish_removal(held)
        assert unit.drop_stale_checkpoints([("e1", "transcribed"), ("e2", "discovered")]) == [
            ("e1", "transcribed")
        ]
        assert unit.clear_run_state(["e3", "e1"]) == 1  # e1 runs: what it holds is its own
    assert ops.read_stale_run_state(db) == [] and ops.read_pending_removals(db) == []
