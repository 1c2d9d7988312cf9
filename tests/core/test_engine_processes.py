"""Several engine processes on one workspace, and the headless runner as a script would use it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.db import queries

ROOT = Path(__file__).resolve().parents[2]


def cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    return subprocess.Popen(
        [sys.executable, "-m", "ewg_tui.cli", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def recording_stages(log: Path, seconds: float = 0.05) -> str:
    text = ""
    for kind, stages in (
        ("episode", ("discovered", "transcribed", "enriched", "editorial", "rendered")),
        ("clip", ("generated", "rendered")),
    ):
        for stage in stages:
            text += (
                f'\n[stages.{kind}.{stage}]\nkind = "python"\ncallable = "stagelib:record"\n'
                f'[stages.{kind}.{stage}.options]\nlog = "{log}"\nseconds = {seconds}\n'
            )
    return text


def test_two_engine_processes_never_run_the_same_stage_at_once(make_demo, tmp_path):
    log = tmp_path / "executions.jsonl"
    ws = make_demo(count=12, extra=recording_stages(log))
    root = str(ws.root)
    procs = [cli("-w", root, "--workers", "3", "run", "--until-idle", "-q") for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len({r["pid"] for r in runs}) == 2  # both processes did work
    by_key: dict = {}
    for r in runs:
        by_key.setdefault((r["item"], r["stage"]), []).append(r)
    # each stage of each item ran exactly once: no overlap, no duplicate
    assert all(len(v) == 1 for v in by_key.values()), [k for k, v in by_key.items() if len(v) > 1]
    assert len(by_key) == 12 * 5 + 12 * 0  # the recording editorial stage creates no clips
    counts = queries.counts(ws.store)["episode"]["by_status"]
    assert counts["done"] == 12


def test_headless_until_idle_ends_with_every_demo_episode_done_or_failed(make_demo):
    ws = make_demo(count=10, faults=True)
    p = cli("-w", str(ws.root), "--workers", "3", "run", "--until-idle")
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err
    doc = queries.status(ws.store)
    assert {e["status"] for e in doc["episodes"]} <= {"done", "failed"}
    failed = [e for e in doc["episodes"] if e["status"] == "failed"]
    assert failed and all(e["error_class"] in ("persistent", "missing_dependency") for e in failed)
    assert all(e["error_message"] for e in failed)
    # the scripted hang was enforced (stalled), then retried to success
    hung = ws.store.read("SELECT outcome FROM attempts WHERE stage='enriched' AND item_id LIKE '%ep005%'")
    assert [r["outcome"] for r in hung][:1] == ["stalled"] and hung[-1]["outcome"] == "succeeded"
    assert "need an operator" in out


def test_sigterm_stops_gracefully_and_work_resumes(make_demo):
    ws = make_demo(count=3, speed=0.4)
    p = cli("-w", str(ws.root), "--workers", "3", "run")
    deadline = time.time() + 30
    while ws.store.read_one("SELECT COUNT(*) FROM items WHERE status='running'")[0] == 0:
        assert time.time() < deadline
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "stopping gracefully" in err
    rows = ws.store.read("SELECT status, lease_owner FROM items")
    assert all(r["status"] in ("queued", "done") and r["lease_owner"] is None for r in rows)
    cancelled = ws.store.read("SELECT spent FROM attempts WHERE outcome='cancelled'")
    assert cancelled and all(r["spent"] == 0 for r in cancelled)
    p = cli("-w", str(ws.root), "run", "--until-idle", "-q")
    p.communicate(timeout=120)
    assert queries.counts(ws.store)["episode"]["by_status"]["done"] == 3


def test_a_killed_engines_work_is_rescued_dead_by_a_live_one_without_spending_an_attempt(make_demo, tmp_path):
    """The killed engine's frozen work must be judged by its owner's death at once, well before dead_after
    (5 s) and the stall threshold just above it, not as STALLED work (abandoned with an attempt spent).
    (A stall threshold below dead_after is refused by engine.config.)"""
    from engine.runtime import Engine

    ws = make_demo(count=1, speed=40.0, dead_after="5.0", stall_after="5.5", lease_duration="60")
    root = str(ws.root)
    victim = cli("-w", root, "--workers", "1", "run")
    deadline = time.time() + 30
    while not ws.store.read("SELECT 1 FROM items WHERE status='running'"):
        assert time.time() < deadline, "the victim never started its stage"
        time.sleep(0.05)
    live = Engine(ws, workers=0).start()  # watches only: a live second engine on the workspace
    try:
        victim.kill()
        victim.wait(timeout=10)
        deadline = time.time() + 10
        while ws.store.read("SELECT 1 FROM items WHERE status='running'"):
            assert time.time() < deadline, "the dead engine's work was not rescued"
            time.sleep(0.05)
        rescued = time.time() - (deadline - 10)
    finally:
        live.stop()
    [row] = ws.store.read("SELECT attempts, rescues, verdict, status FROM items")
    assert row["attempts"] == 0 and row["rescues"] == 1 and row["status"] == "queued"
    outcomes = [r["outcome"] for r in ws.store.read("SELECT outcome FROM attempts")]
    assert outcomes == ["dead"], outcomes  # never `stalled` or `abandoned`
    assert rescued < 4.0  # at once, well before dead_after: the PID on this host is gone
    states = {r["owner"]: r["state"] for r in ws.store.read("SELECT owner, state FROM engines")}
    assert "gone" in states.values()
