"""Fault injection: disk full (checkpoint and database), I/O errors, a database locked by another process,
the items folder vanishing, a flapping service. Each: the engine keeps going, says why, loses nothing and
duplicates nothing."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time

from ewgtest import HealthService

from engine import checkpoints
from engine.db import SQLiteStore, queries
from engine.doctor import diagnose
from engine.runtime import Engine
from engine.verbs import Operator


def wait_for(predicate, timeout=30.0, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


def all_done(ws) -> bool:
    rows = ws.store.read("SELECT status FROM items")
    return bool(rows) and all(r["status"] == "done" for r in rows)


def assert_nothing_lost(ws, episodes: int, reruns_allowed: bool = False) -> None:
    counts = queries.counts(ws.store)
    assert counts["episode"]["total"] == episodes
    assert counts["clip"]["total"] == 2 * episodes
    dup = (
        []
        if reruns_allowed
        else ws.store.read(
            "SELECT item_id, stage, COUNT(*) n FROM attempts WHERE outcome='succeeded'"
            " GROUP BY item_id, stage HAVING n > 1"
        )
    )
    assert [tuple(r) for r in dup] == []
    for row in ws.store.read("SELECT item_id, stage, manifest FROM checkpoints WHERE stale=0"):
        assert (
            checkpoints.verify(ws.item_dir(row["item_id"]) / row["stage"], json.loads(row["manifest"])) == []
        )
    assert checkpoints.leftovers(ws.items_root) == []
    assert ws.store.integrity_check() == "ok"


def workers_alive(eng: Engine) -> bool:
    with eng._lock:
        return all(t.is_alive() for t in eng._slots.values())


class FailingPrepare:
    """checkpoints.prepare that writes half a file into the temporary output, then raises OSError(code)."""

    def __init__(self, code: int, stage: str, times: int = 1) -> None:
        self.code, self.stage, self.left = code, stage, times
        self.real = checkpoints.prepare
        self.partials: list = []

    def __call__(self, tmp, final, skipped=False):
        if self.left > 0 and final.name == self.stage:
            self.left -= 1
            (tmp / "half-written.bin").write_bytes(b"\0" * 4096)
            self.partials.append(tmp)
            raise OSError(self.code, os.strerror(self.code), str(tmp / "half-written.bin"))
        return self.real(tmp, final, skipped)


def test_disk_full_while_writing_a_checkpoint_pauses_and_resumes(make_demo, monkeypatch):
    ws = make_demo(count=2)
    failing = FailingPrepare(errno.ENOSPC, "transcribed", times=1)
    monkeypatch.setattr(checkpoints, "prepare", failing)
    eng = Engine(ws, workers=2).start()
    assert eng.run_until_idle(timeout=60)
    eng.stop()
    assert all_done(ws)
    assert_nothing_lost(ws, 2)
    failed = ws.store.read("SELECT * FROM attempts WHERE outcome='failed'")
    assert len(failed) == 1 and failed[0]["error_class"] == "resource" and failed[0]["spent"] == 0
    assert "No space left" in failed[0]["error_message"]
    events = [e["verb"] for e in queries.events(ws.store, limit=100)]
    assert "resource_pause" in events and "resource_resume" in events  # said why, and resumed
    pause = ws.store.read_one("SELECT reason FROM events WHERE verb='resource_pause'")
    assert "No space left" in pause["reason"]
    assert not any(p.exists() for p in failing.partials)  # the partial output is gone


def test_io_error_on_a_checkpoint_write_is_transient_and_cleaned_up(make_demo, monkeypatch):
    ws = make_demo(count=1)
    failing = FailingPrepare(errno.EIO, "enriched", times=1)
    monkeypatch.setattr(checkpoints, "prepare", failing)
    eng = Engine(ws, workers=1).start()
    assert eng.run_until_idle(timeout=60)
    eng.stop()
    assert all_done(ws)
    assert_nothing_lost(ws, 1)
    failed = ws.store.read("SELECT * FROM attempts WHERE outcome='failed'")
    assert [(a["stage"], a["error_class"], a["spent"]) for a in failed] == [("enriched", "transient", 1)]
    assert "errno EIO" in failed[0]["decision"] and "retry 2/" in failed[0]["decision"]
    assert failing.partials and not failing.partials[0].exists()


class DiskFullDatabase:
    """Every database commit fails with SQLITE_FULL while `full` is set (what SQLite raises on ENOSPC)."""

    def __init__(self) -> None:
        self.full = False
        self.refused = 0
        self.real = SQLiteStore._execute_busy_safe

    def install(self, monkeypatch) -> None:
        me = self

        def execute(store, conn, sql):
            if me.full and sql == "COMMIT":
                me.refused += 1
                conn.execute("ROLLBACK")  # SQLite rolls the transaction back on SQLITE_FULL
                raise sqlite3.OperationalError("database or disk is full")
            return me.real(store, conn, sql)

        monkeypatch.setattr(SQLiteStore, "_execute_busy_safe", execute)


def test_disk_full_while_writing_the_database_loses_nothing(make_demo, monkeypatch):
    ws = make_demo(count=3, speed=0.2)
    disk = DiskFullDatabase()
    disk.install(monkeypatch)
    eng = Engine(ws, workers=2).start()
    wait_for(lambda: ws.store.read_one("SELECT COUNT(*) FROM attempts WHERE outcome='succeeded'")[0] >= 2)
    disk.full = True
    wait_for(lambda: disk.refused >= 6, timeout=30)
    time.sleep(1.0)
    disk.full = False
    assert eng.run_until_idle(timeout=90)
    alive = workers_alive(eng)
    eng.stop()
    assert alive, "a worker thread died on the failed database write"
    assert all_done(ws)
    assert_nothing_lost(ws, 3)
    spent = ws.store.read(
        "SELECT stage, error_class, error_message FROM attempts WHERE spent=1 AND outcome!='succeeded'"
    )
    assert [tuple(r) for r in spent] == []  # a full disk is a resource: no attempt spent


def _hold_exclusive(db, seconds: float) -> subprocess.Popen:
    code = (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        f"time.sleep({seconds})\n"
        "c.execute('COMMIT')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_database_locked_by_another_process_is_waited_out(make_demo):
    ws = make_demo(count=3, speed=0.3, busy_timeout_ms="200", dead_after="10.0", stall_after="12.0")
    eng = Engine(ws, workers=2).start()
    wait_for(lambda: eng.busy() >= 1)
    holder = _hold_exclusive(ws.store.path, 2.5)  # >10x busy_timeout
    holder.wait(timeout=30)
    assert eng.run_until_idle(timeout=90)
    alive = workers_alive(eng)
    eng.stop()
    assert alive
    assert ws.store.busy_waits > 0 and ws.store.last_busy_at is not None  # visible to the UI/CLI
    assert all_done(ws)
    assert_nothing_lost(ws, 3)
    assert ws.store.read("SELECT * FROM attempts WHERE error_message LIKE '%locked%'") == []


def test_a_lock_longer_than_dead_after_does_not_rescue_live_work(make_demo):
    """A lock of a few seconds (as above, with dead_after 1 s) lets the watchdog read a stale heartbeat of work
    this very process is running. Seen 3 times in 4 with a real lock; made deterministic here by ageing the
    heartbeat the lock would have held up, between two heartbeats."""
    ws = make_demo(count=1, speed=4.0, heartbeat_interval="5.0", dead_after="6.0", stall_after="100")
    eng = Engine(ws, workers=1).start()
    wait_for(lambda: eng.busy() == 1)
    row = ws.store.read_one("SELECT id, lease_token FROM items WHERE status='running'")
    with ws.store.write() as conn:
        conn.execute("UPDATE items SET heartbeat_at=? WHERE id=?", (time.time() - 60, row["id"]))
    verdicts = eng.watchdog.check()
    still = ws.store.read_one("SELECT status, lease_token FROM items WHERE id=?", (row["id"],))
    eng.stop(force=True)
    assert verdicts.get(row["id"]) != "DEAD"
    assert (still["status"], still["lease_token"]) == ("running", row["lease_token"])


def test_items_folder_replaced_by_a_file_mid_run(make_demo):
    """As root, chmod cannot make a folder read-only, so the folder is deleted and a file put in its place:
    every later write into it fails, whoever runs the engine."""
    ws = make_demo(count=4, speed=0.3, max_attempts="2")
    eng = Engine(ws, workers=2).start()
    wait_for(lambda: ws.store.read_one("SELECT COUNT(*) FROM attempts WHERE outcome='succeeded'")[0] >= 3)
    shutil.rmtree(ws.items_root)
    ws.items_root.write_text("not a folder")
    assert eng.run_until_idle(timeout=90)
    alive = workers_alive(eng)
    eng.stop()
    assert alive
    assert queries.counts(ws.store)["episode"]["total"] == 4  # nothing lost from the db
    assert ws.store.integrity_check() == "ok"
    failed = ws.store.read("SELECT id, error_class, error_message FROM items WHERE status='failed'")
    assert failed
    for row in failed:
        assert str(ws.items_root) in row["error_message"], row["error_message"]
        assert row["error_class"] in ("transient", "resource", "persistent", "config_error"), row[
            "error_class"
        ]
    # the way back: put the folder back, let doctor find the lost checkpoints and rerun them, retry
    ws.items_root.unlink()
    ws.items_root.mkdir()
    report = diagnose(ws.root, repair=True, actor="tester")
    assert report.healthy, report.text()
    Operator(ws, actor="tester").retry(failed=True)
    eng = Engine(ws, workers=2).start()
    assert eng.run_until_idle(timeout=90)
    eng.stop()
    assert all_done(ws)
    assert_nothing_lost(ws, 4, reruns_allowed=True)  # the stages whose checkpoints were deleted ran again


def test_flapping_service_burns_no_attempts_and_duplicates_nothing(make_demo):
    server = HealthService()
    stop = threading.Event()

    def flap():
        while not stop.wait(0.7):
            server.up = not server.up

    flapper = threading.Thread(target=flap, daemon=True)
    url = server.url
    extra = (
        f'\n[services.llm]\nurl = "{url}"\ninterval = 0.2\ntimeout = 1.0\n'
        '\n[stages.episode.enriched]\nkind = "demo"\nduration = 0.3\nservices = ["llm"]\n'
    )
    ws = make_demo(count=4, speed=0.2, extra=extra)
    try:
        flapper.start()
        eng = Engine(ws, workers=2).start()
        wait_for(lambda: all_done(ws), timeout=120)  # service-blocked items wait for the service, not idle
        eng.stop()
    finally:
        stop.set()
        server.shutdown()
    downs = ws.store.read("SELECT COUNT(*) FROM events WHERE verb='service_down'")[0][0]
    assert downs >= 1
    assert_nothing_lost(ws, 4)
    burned = ws.store.read(
        "SELECT * FROM attempts WHERE stage='enriched' AND spent=1 AND outcome!='succeeded'"
    )
    assert burned == []
    assert (
        ws.store.read_one("SELECT COUNT(*) FROM attempts WHERE stage='enriched' AND outcome='succeeded'")[0]
        == 4
    )


def test_a_database_lock_held_elsewhere_is_visible_to_status(make_demo):
    ws = make_demo(count=2, speed=0.3, busy_timeout_ms="200", dead_after="10.0", stall_after="12.0")
    eng = Engine(ws, workers=2).start()
    wait_for(lambda: eng.busy() >= 1)
    _hold_exclusive(ws.store.path, 1.5).wait(timeout=30)
    wait_for(lambda: queries.overview(ws.store, time.time()).db_busy_at is not None, timeout=15)
    eng.stop()
    out = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", "-w", str(ws.root), "status"], capture_output=True, text=True
    )
    assert (
        "writes waited for a database lock held elsewhere" in out.stdout and "sqlite3 sessions" in out.stdout
    )
