"""`ewg doctor [--repair]`: every check finds what it is for, repairs are safe and audited, and a database
that cannot be opened is diagnosed (with the way back from a backup) without being touched."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from engine import checkpoints
from engine.db import queries
from engine.doctor import ERROR, OK, WARNING, diagnose
from engine.runtime import Engine

ROOT = Path(__file__).resolve().parents[2]


def ewg(*args, cwd=None, timeout=120):
    proc = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return proc.returncode, proc.stdout, proc.stderr


def findings(report, check, severity=None):
    return [f for f in report.findings if f.check == check and (severity is None or f.severity == severity)]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def done_ws(make_demo):
    """Two episodes run to the end, with a backup taken."""
    ws = make_demo(count=2)
    eng = Engine(ws, workers=2).start()
    assert eng.run_until_idle(timeout=60)
    eng.stop()
    ws.store.backup(ws.backups, label="test")
    return ws


def test_a_healthy_workspace_is_healthy(done_ws):
    report = diagnose(done_ws.root, probe=lambda *a: (True, "HTTP 200"))
    assert report.healthy, report.text()
    assert findings(report, "checkpoints", OK) and "verified" in findings(report, "checkpoints")[0].what
    assert findings(report, "backups", OK) and "cp " in findings(report, "backups")[0].what
    code, out, err = ewg("--workspace", str(done_ws.root), "doctor")
    assert code == 0 and "Healthy" in out and err == ""
    code, out, _ = ewg("--workspace", str(done_ws.root), "doctor", "--json")
    assert code == 0 and json.loads(out)["healthy"] is True


def test_repair_sweeps_rescues_and_reruns_damaged_checkpoints(done_ws):
    ws = done_ws
    episode = ws.store.read_one("SELECT id FROM items WHERE kind='episode' ORDER BY id")["id"]
    other = ws.store.read("SELECT id FROM items WHERE kind='episode' ORDER BY id")[1]["id"]
    # damage: a checksum that no longer matches (same size), a missing file, an orphan temp folder
    manifest = json.loads(
        ws.store.read_one(
            "SELECT manifest FROM checkpoints WHERE item_id=? AND stage='enriched'", (episode,)
        )["manifest"]
    )
    target = ws.item_dir(episode) / "enriched" / manifest["files"][0]["path"]
    data = target.read_bytes()
    target.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    (ws.item_dir(episode) / "rendered" / "rendered.json").unlink()
    junk = checkpoints.temp_dir(ws.item_dir(other), "rendered", 4242)
    (junk / "half.bin").write_bytes(b"x" * 1000)
    # a lease held by a process that is gone
    proc = psutil.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead_owner = f"{os.uname().nodename}:{proc.pid}:{int(time.time()) - 1000}"
    with ws.store.write() as conn:
        conn.execute(
            "UPDATE items SET stage='editorial', next_stage='rendered', status='queued', next_attempt_at=0"
            " WHERE id=?",
            (other,),
        )
    claim = ws.store.claim(dead_owner, time.time(), 3600)
    assert claim is not None and claim.item_id == other

    report = diagnose(ws.root)
    assert not report.healthy
    damaged = findings(report, "checkpoints", ERROR)
    assert len(damaged) == 1 and episode in damaged[0].what
    assert "checksum" in damaged[0].what and "--from enriched" in damaged[0].fix
    assert findings(report, "temp", WARNING) and "1 orphan" in findings(report, "temp")[0].what
    lease = findings(report, "leases", ERROR)
    assert lease and dead_owner in lease[0].what and lease[0].items == [other]
    assert junk.exists()  # diagnosis alone changes nothing
    assert queries.item(ws.store, episode)["stage"] == "rendered"

    fixed = diagnose(ws.root, repair=True, actor="doc-tester")
    assert fixed.healthy, fixed.text()
    assert not junk.exists()
    row = queries.item(ws.store, episode)
    assert row["stage"] == "transcribed" and row["status"] == "queued"  # back to before the earliest damage
    stale = {
        r["stage"]
        for r in ws.store.read("SELECT stage FROM checkpoints WHERE item_id=? AND stale=1", (episode,))
    }
    assert stale == {"enriched", "editorial", "rendered"}
    verbs = {(e["actor"], e["verb"]) for e in queries.events(ws.store, limit=50)}
    assert ("doc-tester", "doctor_repair") in verbs and ("doc-tester", "rescue") in verbs
    assert ("doc-tester", "rollback") in verbs
    assert queries.item(ws.store, other)["status"] == "queued"

    eng = Engine(ws, workers=2).start()
    assert eng.run_until_idle(timeout=60)
    eng.stop()
    assert diagnose(ws.root).healthy
    assert queries.item(ws.store, episode)["status"] == "done"
