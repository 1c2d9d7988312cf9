"""The contract every database driver keeps: each test runs on SQLite and on a real PostgreSQL.

State is seeded through the repository (workspace.add_episode, the store's named operations),
never raw SQL, so a driver passes by doing what the engine relies on, not by sharing a schema.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from engine.db import Completion, DatabaseError, ReadInterrupted
from engine.workspace import add_episode, open_workspace

NOW = time.time() + 3600  # later than every item seeded (add_episode stamps the real time)


def _episodes(ws, n: int) -> list[str]:
    ids = [f"ep{i:04d}" for i in range(n)]
    for item_id in ids:
        assert add_episode(ws, item_id, f"/media/{item_id}.mp4", show="show", title=item_id)
    return ids


def _done(claim, worker="w1") -> Completion:
    return Completion(
        item_id=claim.item_id,
        lease_token=claim.lease_token,
        stage=claim.stage,
        next_stage=None,
        manifest=json.dumps({"files": []}),
        log_tail="ok",
        number=claim.attempt_number,
        worker=worker,
        started_at=claim.started_at,
    )


def test_a_new_database_has_the_newest_schema_and_an_identity(any_workspace, backend):
    ws = any_workspace()
    assert ws.store.backend == backend
    assert ws.store.schema_version() == ws.store.schema_target
    identity = ws.store.identity()
    assert len(identity) == 32
    root = ws.root
    ws.close()
    again = open_workspace(root)
    try:
        assert again.store.identity() == identity  # the same database, not a fresh one
    finally:
        again.close()


def test_claim_leases_each_ready_item_once_with_a_new_token(any_workspace):
    ws = any_workspace()
    _episodes(ws, 3)
    first = ws.store.claim("host:1:1", NOW + 10, 30.0)
    assert first is not None and first.stage == "discovered" and first.attempt_number == 1
    item = ws.store.read_one(
        "SELECT status, lease_owner, lease_token FROM items WHERE id=?", (first.item_id,)
    )
    assert (item["status"], item["lease_owner"], item["lease_token"]) == (
        "running",
        "host:1:1",
        first.lease_token,
    )
    seen = {first.item_id}
    while (c := ws.store.claim("host:1:1", NOW + 10, 30.0)) is not None:
        assert c.item_id not in seen
        seen.add(c.item_id)
    assert len(seen) == 3


def test_completion_is_fenced_by_the_lease_token(any_workspace):
    ws = any_workspace()
    _episodes(ws, 2)
    a = ws.store.claim("w", NOW + 10, 30.0)
    b = ws.store.claim("w", NOW + 10, 30.0)
    stale = _done(b)
    stale = Completion(**{**stale.__dict__, "lease_token": b.lease_token + 5})
    with ws.store.write() as unit:
        accepted = ws.store.complete_batch(unit, [_done(a), stale], NOW + 11)
    assert accepted == {a.item_id}
    rows = {r["id"]: r["status"] for r in ws.store.read("SELECT id, status FROM items")}
    assert rows == {a.item_id: "done", b.item_id: "running"}
    attempts = ws.store.read("SELECT item_id, outcome, spent FROM attempts")
    assert [(r["item_id"], r["outcome"], bool(r["spent"])) for r in attempts] == [
        (a.item_id, "succeeded", True)
    ]
    checkpoint = ws.store.read_one("SELECT stale FROM checkpoints WHERE item_id=?", (a.item_id,))
    assert not checkpoint["stale"]


def test_heartbeat_extends_live_leases_and_reports_lost_ones(any_workspace):
    ws = any_workspace()
    _episodes(ws, 1)
    c = ws.store.claim("w", NOW, 30.0)
    beats = ws.store.heartbeat([(c.item_id, c.lease_token, 0.5, "half", NOW + 5)], NOW + 5, 30.0)
    assert beats == {c.item_id: None}
    row = ws.store.read_one("SELECT progress, lease_expires_at FROM items WHERE id=?", (c.item_id,))
    assert row["progress"] == 0.5 and row["lease_expires_at"] == NOW + 35
    lost = ws.store.heartbeat([(c.item_id, c.lease_token - 1, 0.6, "", NOW + 6)], NOW + 6, 30.0)
    assert lost == {c.item_id: "LOST"}


def test_a_unit_that_fails_commits_nothing(any_workspace):
    ws = any_workspace()
    _episodes(ws, 1)
    with pytest.raises(RuntimeError), ws.store.write() as unit:
        ws.store.claim_batch(unit, "w", NOW, 30.0, (), 5)
        raise RuntimeError("the dispatcher crashed mid-unit")
    assert ws.store.read_one("SELECT status FROM items")["status"] == "queued"


def test_feed_cursor_is_a_compare_and_swap(any_workspace):
    ws = any_workspace()
    assert ws.store.read_cursor("alerts") is None
    assert ws.store.advance_cursor("alerts", None, 5, NOW)
    assert not ws.store.advance_cursor("alerts", None, 6, NOW)  # someone set it first
    assert not ws.store.advance_cursor("alerts", 4, 6, NOW)
    assert ws.store.advance_cursor("alerts", 5, 9, NOW)
    assert ws.store.read_cursor("alerts") == 9


def test_concurrent_claimers_never_share_an_item(any_workspace):
    """Four threads, each with its own connection, drain 120 items: every item once, none twice."""
    ws = any_workspace()
    _episodes(ws, 120)
    got: list[list[str]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def drain(slot: int) -> None:
        try:
            while True:
                with ws.store.write() as unit:
                    claims = ws.store.claim_batch(unit, f"w{slot}", NOW + 10, 30.0, (), 3)
                if not claims:
                    return
                got[slot].extend(c.item_id for c in claims)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    everything = [i for part in got for i in part]
    assert len(everything) == len(set(everything)) == 120


def test_a_reader_read_can_be_interrupted_from_another_thread(any_workspace, backend):
    ws = any_workspace()
    reader = ws.store.reader()
    slow = (
        "SELECT pg_sleep(30)"
        if backend == "postgresql"
        else "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT COUNT(*) FROM n"
    )
    threading.Timer(0.3, reader.interrupt).start()
    started = time.monotonic()
    with pytest.raises(ReadInterrupted):
        reader.read(slow)
    assert time.monotonic() - started < 10
    reader.resume()
    assert reader.read_one("SELECT 1")[0] == 1


def test_the_reader_cannot_write(any_workspace):
    ws = any_workspace()
    reader = ws.store.reader()
    with pytest.raises(Exception, match="(?i)read.?only|readonly"):
        reader.read("UPDATE engine_state SET value='x'")


# -- PostgreSQL only -----------------------------------------------------------------------------


def test_init_refuses_a_database_that_already_holds_ewg(pg_url, tmp_path, monkeypatch):
    from engine.workspace import init_workspace

    monkeypatch.setenv("EWG_DATABASE_URL", pg_url)
    init_workspace(tmp_path / "a").close()
    with pytest.raises(DatabaseError, match="already holds an ewg schema"):
        init_workspace(tmp_path / "b")


def test_messages_never_show_the_password(pg_url):
    from engine.db.postgres import PostgresStore, redact

    secret = pg_url.replace("postgresql://", "postgresql://nobody:s3cret@", 1).replace(
        "@/", "@localhost:1/", 1
    )
    assert "s3cret" not in redact(secret)
    with pytest.raises(DatabaseError) as caught:
        PostgresStore.open("postgresql://nobody:s3cret@127.0.0.1:1/none?connect_timeout=1")
    assert "s3cret" not in str(caught.value) and "cannot reach" in str(caught.value)


def test_a_bad_database_url_in_the_environment_is_named(tmp_path, monkeypatch):
    from engine.config import ConfigError
    from engine.workspace import init_workspace

    monkeypatch.setenv("EWG_DATABASE_URL", "mysql://x/y")
    with pytest.raises(ConfigError, match="EWG_DATABASE_URL must be a postgresql:// URL"):
        init_workspace(tmp_path / "ws")


def test_one_host_leads_and_the_lead_moves_when_it_dies(pg_url):
    from engine.db.postgres import PostgresStore

    first, second = PostgresStore.create(pg_url), PostgresStore(pg_url)
    try:
        assert first.try_lead()
        assert first.try_lead()  # kept, not retaken
        assert not second.try_lead()
        first.close()  # the process dies: the server drops its session and its lock
        deadline = time.monotonic() + 5
        while not second.try_lead():
            assert time.monotonic() < deadline, "the lead never moved"
            time.sleep(0.05)
    finally:
        first.close()
        second.close()


def test_a_wake_up_from_another_host_arrives_in_well_under_a_second(pg_url):
    from engine.db.postgres import PostgresStore

    sender, listener = PostgresStore.create(pg_url), PostgresStore(pg_url)
    try:
        assert listener.wait(0.05) == []  # starts listening
        got: list[list[str]] = []
        waiting = threading.Thread(target=lambda: got.append(listener.wait(5.0)))
        started = time.monotonic()
        waiting.start()
        time.sleep(0.1)
        with sender.write() as unit:
            unit.notify("verb")
        waiting.join(6)
        assert got == [["verb"]]
        assert time.monotonic() - started < 1.0
    finally:
        sender.close()
        listener.close()


def test_a_broken_connection_is_reopened_for_the_next_unit(pg_url):
    import psycopg

    from engine.db.postgres import PostgresStore

    store = PostgresStore.create(pg_url)
    try:
        pid = store.read_one("SELECT pg_backend_pid()")[0]
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.2)
        with pytest.raises(psycopg.OperationalError):
            store.read_one("SELECT 1")  # the dead session fails the statement it was running
        assert store.read_one("SELECT 1")[0] == 1  # ... and the next one reconnects
        assert store.read_one("SELECT pg_backend_pid()")[0] != pid
    finally:
        store.close()


def test_a_readonly_workspace_cannot_write_on_any_backend(any_workspace):
    ws = any_workspace()
    root = ws.root
    ws.close()
    ro = open_workspace(root, readonly=True)
    try:
        with pytest.raises(Exception, match="(?i)read.?only|readonly"), ro.store.write() as unit:
            unit.execute("UPDATE engine_state SET value='x'")
            unit.execute("INSERT INTO engine_state (key, value) VALUES ('k', 'v')")
    finally:
        ro.close()


def test_a_frozen_leader_loses_the_lead_to_a_live_host(pg_url):
    """A frozen host keeps its session and so its advisory lock: its stale heartbeat hands the lead on."""
    import psycopg

    from engine.db.postgres import PostgresStore

    first, second = PostgresStore.create(pg_url), PostgresStore(pg_url)
    try:
        now = time.time()
        with first.write() as unit:
            unit.register_engine("host-1:7:1", "host-1", 7, now - 60, 2)  # its last beat: 60 s ago
        assert first.try_lead("host-1:7:1", dead_after=10, now=now)
        assert not second.try_lead("host-2:8:1")  # no judgement asked: the lock holds
        assert second.try_lead("host-2:8:1", dead_after=10, now=now)  # its heartbeat is 60 s old
        with pytest.raises(psycopg.OperationalError):
            first._lead.execute("SELECT 1")  # the frozen leader's session was ended
        assert not first.try_lead("host-1:7:1", dead_after=10, now=now)  # ... and does not come back
    finally:
        first.close()
        second.close()


def test_checking_a_database_file_keeps_this_processs_sqlite_locks(tmp_path):
    """Closing any descriptor of a file drops every POSIX lock this process holds on it, its SQLite
    connections' included (a WAL connection holds a shared lock on the file while it is open): the
    header check keeps its descriptor, so another process still sees the lock afterwards."""
    import subprocess
    import sys

    from engine.db.sqlite import read_header
    from engine.workspace import init_workspace

    ws = init_workspace(tmp_path / "ws")
    probe = (
        "import fcntl, os, struct, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "req = struct.pack('hhqqi4x', fcntl.F_WRLCK, 0, 0x40000002, 510, 0)\n"
        "got = struct.unpack('hhqqi4x', fcntl.fcntl(fd, fcntl.F_GETLK, req))\n"
        "print('locked' if got[0] != fcntl.F_UNLCK else 'free')\n"
    )

    def seen() -> str:
        return subprocess.run(
            [sys.executable, "-c", probe, str(ws.store.path)], capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        ws.store.read_one("SELECT COUNT(*) FROM items")  # the connection holds its shared lock
        assert seen() == "locked"
        for _ in range(3):
            assert read_header(ws.store.path) == b"SQLite format 3\x00"
            open_workspace(ws.root, readonly=True).close()  # a second store checks the header too
        assert seen() == "locked"  # an open()/close() of the file here would have dropped it
    finally:
        ws.close()
