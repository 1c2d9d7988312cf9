"""Retention: old history goes, each item's newest attempts and people's verbs stay."""

from __future__ import annotations

import json
import subprocess
import sys

from engine.db import queries
from engine.retention import DAY, prune
from engine.runtime import Engine
from engine.verbs import Operator

TRANSIENT_TWICE = '\n[[demo.faults]]\nitem = 1\nstage = "transcribed"\nfault = "transient"\ntimes = 2\n'


def _history(make_demo):
    ws = make_demo(count=2, extra=TRANSIENT_TWICE)
    eng = Engine(ws, workers=2).start()
    assert eng.run_until_idle(timeout=60)
    eng.stop()
    Operator(ws, actor="alice").pause(reason="maintenance")
    return ws


def _count(ws, table):
    return ws.store.read_one(f"SELECT COUNT(*) FROM {table}")[0]


def test_a_dry_run_counts_and_deletes_nothing(make_demo):
    ws = _history(make_demo)
    before = (_count(ws, "attempts"), _count(ws, "events"))
    report = prune(ws.store, days=30, keep_attempts_per_item=2, now=ws.clock.now() + 60 * DAY, dry_run=True)
    assert report.attempts > 0 and report.events > 0 and not report.applied
    assert (_count(ws, "attempts"), _count(ws, "events")) == before


def test_prune_keeps_each_items_newest_attempts_and_every_operator_verb(make_demo):
    ws = _history(make_demo)
    ids = [r["id"] for r in ws.store.read("SELECT id FROM items")]
    dry = prune(ws.store, days=30, keep_attempts_per_item=2, now=ws.clock.now() + 60 * DAY, dry_run=True)
    done = prune(ws.store, days=30, keep_attempts_per_item=2, now=ws.clock.now() + 60 * DAY, dry_run=False)
    assert (done.attempts, done.events) == (dry.attempts, dry.events) and done.applied
    for item_id in ids:
        assert 1 <= len(queries.attempts(ws.store, item_id)) <= 2
    verbs = [(e["actor"], e["verb"]) for e in queries.events(ws.store)]
    assert ("alice", "pause") in verbs  # a person's verb is never pruned
    assert ("engine", "prune") in verbs and not any(a == "watchdog" for a, _ in verbs)


def test_recent_history_is_kept(make_demo):
    ws = _history(make_demo)
    report = prune(ws.store, days=30, keep_attempts_per_item=1, now=ws.clock.now(), dry_run=False)
    assert report.total == 0


def _ewg(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", *args], capture_output=True, text=True, timeout=60
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_ewg_prune_dry_run_and_bad_days(make_demo):
    ws = _history(make_demo)
    root = str(ws.root)
    ws.close()
    code, out, err = _ewg("--workspace", root, "prune", "--dry-run", "--days", "1", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["applied"] is False and doc["cutoff"].endswith("Z")
    for bad in ("nan", "-1", "inf", "soon"):
        code, _out, err = _ewg("--workspace", root, "prune", "--days", bad)
        assert code == 2 and "days" in err and "Traceback" not in err
