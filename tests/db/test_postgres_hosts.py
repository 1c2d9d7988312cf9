"""Several engines on one PostgreSQL database: shared work done once, wake-ups across hosts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.demo import demo_config, seed_episodes, set_key
from engine.runtime import Engine
from engine.workspace import add_episode, init_workspace, open_workspace

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_env(pg_url, monkeypatch):
    monkeypatch.setenv("EWG_DATABASE_URL", pg_url)
    return pg_url


def test_two_engine_processes_share_the_work_and_do_it_once(pg_env, tmp_path):
    text = set_key(demo_config(faults=False, speed=0.02), "poll_interval", "0.05")
    ws = init_workspace(tmp_path / "ws", text)
    seed_episodes(ws, 8)
    ws.close()
    cmd = [sys.executable, "-m", "ewg_tui.cli", "--workspace", str(tmp_path / "ws"), "--workers", "2"]
    cmd += ["run", "--headless", "--until-idle", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    ws = open_workspace(tmp_path / "ws", readonly=True)
    try:
        statuses = {r["status"] for r in ws.store.read("SELECT status FROM items")}
        assert statuses == {"done"}
        twice = ws.store.read(
            "SELECT item_id, stage FROM attempts WHERE outcome='succeeded' GROUP BY item_id, stage"
            " HAVING COUNT(*) > 1"
        )
        assert twice == []
        owners = {r["owner"] for r in ws.store.read("SELECT owner FROM engines")}
        assert len(owners) == 2  # both processes registered on the one database
    finally:
        ws.close()


def test_an_idle_engine_hears_new_work_from_another_host_at_once(pg_env, tmp_path):
    """With polling slowed to 5 s, only the LISTEN/NOTIFY wake-up can start the work within a second."""
    text = set_key(demo_config(faults=False, speed=0.02), "poll_interval", "5.0")
    ws = init_workspace(tmp_path / "ws", text)
    engine = Engine(ws, workers=1).start()
    try:
        time.sleep(1.0)  # idle, its dispatcher asleep in a 5 s poll
        other = open_workspace(tmp_path / "ws")  # another host's connection
        try:
            added = time.time()
            assert add_episode(other, "ep-late", "demo://late", show="s", title="late")
        finally:
            other.close()
        deadline = added + 3.0
        started = None
        while time.time() < deadline and started is None:
            row = ws.store.read_one("SELECT started_at FROM items WHERE id='ep-late' AND status != 'queued'")
            started = row["started_at"] if row else None
            time.sleep(0.02)
        assert started is not None, "the idle engine never claimed the new work"
        assert started - added < 1.0
    finally:
        engine.stop()
        ws.close()


def test_doctor_reports_the_server_its_schema_and_a_stale_host(pg_env, tmp_path):
    from engine.doctor import diagnose

    ws = init_workspace(tmp_path / "ws", demo_config(faults=False))
    now = time.time()
    with ws.store.write() as unit:
        unit.register_engine("far-host:7:1", "far-host", 7, now - 600, 2)
    ws.close()
    report = diagnose(tmp_path / "ws")
    text = report.text()
    assert "PostgreSQL 15" in text and "reachable" in text
    assert "schema version 1 (current)" in text
    assert "far-host:7:1" in text and "stopped beating" in text
    assert "pg_dump" in text  # backups are the server's
    assert "s3cret" not in text


def test_doctor_names_an_unreachable_server_without_a_traceback(tmp_path, monkeypatch):
    from engine.doctor import diagnose

    monkeypatch.delenv("EWG_DATABASE_URL", raising=False)
    ws = init_workspace(tmp_path / "ws", demo_config(faults=False))
    ws.close()
    monkeypatch.setenv("EWG_DATABASE_URL", "postgresql://u:s3cret@127.0.0.1:1/none?connect_timeout=1")
    report = diagnose(tmp_path / "ws")
    assert not report.healthy
    text = report.text()
    assert "cannot reach the PostgreSQL database" in text and "s3cret" not in text


def test_a_stop_from_another_host_reaches_a_running_stage_within_a_second(pg_env, tmp_path):
    """The heartbeat is slowed to 5 s: only the verb's wake-up can bring its cancel request this fast."""
    from engine.verbs import Operator

    text = set_key(demo_config(faults=False, speed=3.0), "heartbeat_interval", "5.0")
    text = set_key(text, "dead_after", "30.0")
    text = set_key(text, "stall_after", "60.0")
    ws = init_workspace(tmp_path / "ws", text)
    seed_episodes(ws, 1)
    engine = Engine(ws, workers=1).start()
    try:
        deadline = time.time() + 20
        while time.time() < deadline and not ws.store.read("SELECT id FROM items WHERE status='running'"):
            time.sleep(0.05)
        (row,) = ws.store.read("SELECT id FROM items WHERE status='running'")
        other = open_workspace(tmp_path / "ws")
        try:
            asked = time.time()
            Operator(other).stop([row["id"]])
        finally:
            other.close()
        while time.time() < asked + 4 and ws.store.read_one(
            "SELECT 1 FROM items WHERE id=? AND status='running'", (row["id"],)
        ):
            time.sleep(0.02)
        status = ws.store.read_one("SELECT status FROM items WHERE id=?", (row["id"],))["status"]
        assert status == "stopped"
        assert time.time() - asked < 2.0
    finally:
        engine.stop()
        ws.close()


def _ewg(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ewg_init_database_url_then_every_command_uses_the_server(pg_url, tmp_path, monkeypatch):
    monkeypatch.delenv("EWG_DATABASE_URL", raising=False)
    ws_dir = tmp_path / "ws"
    made = _ewg("init", str(ws_dir), "--database", pg_url, "--demo", "3", "--simulated")
    assert made.returncode == 0, made.stderr
    assert f'database = "{pg_url}"' in (ws_dir / "ewg.toml").read_text()
    assert not (ws_dir / "ewg.db").exists()
    status = _ewg("-w", str(ws_dir), "status", "--json")
    assert status.returncode == 0, status.stderr
    import json

    assert json.loads(status.stdout)["counts"]["episode"]["total"] == 3
    run = _ewg("-w", str(ws_dir), "run", "--until-idle", "--quiet")
    assert run.returncode == 0, run.stderr
    failures = _ewg("-w", str(ws_dir), "failures", "--json")
    assert failures.returncode == 0, failures.stderr


def test_ewg_init_refuses_a_database_that_is_not_postgresql(tmp_path):
    made = _ewg("init", str(tmp_path / "ws"), "--database", "mysql://x/y")
    assert made.returncode == 2
    assert "--database must be a postgresql:// URL" in made.stderr and "Traceback" not in made.stderr
    assert not (tmp_path / "ws").exists()
