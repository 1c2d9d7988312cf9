"""Crash torture, short version: about 20 SIGKILLs of a headless engine on a chaos demo workspace.

bench/torture.py is the harness (its default is 200 kills); this runs it small enough for the suite
and then proves its checks can fail, by damaging the workspace it left behind.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_torture():
    spec = importlib.util.spec_from_file_location("ewg_bench_torture", ROOT / "bench" / "torture.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


torture = _load_torture()


@pytest.fixture(scope="module")
def tortured(tmp_path_factory):
    root = tmp_path_factory.mktemp("torture") / "ws"
    harness = torture.Torture(root, kills=20, seed=11, workers=2, episodes=8, log=lambda s: None)
    figures = harness.run()
    return harness, figures


@pytest.mark.slow
def test_twenty_kills_lose_nothing_and_duplicate_nothing(tortured):
    harness, fig = tortured
    print(fig.table())
    assert fig.problems == []
    assert fig.kills == 20
    assert fig.items_lost == 0 and fig.duplicate_successes == 0
    assert fig.episodes >= 8 and fig.clips >= 2
    assert fig.final_done + fig.final_failed == fig.episodes + fig.clips
    assert fig.final_done > 0 and fig.executions > 0
    # the scripted faults end as operator failures: episode 7 persistent, episode 8 missing dependency
    conn = sqlite3.connect(harness.db)
    classes = {r[0] for r in conn.execute("SELECT error_class FROM items WHERE status='failed'")}
    conn.close()
    assert classes <= set(torture.FINAL_FAILURE_CLASSES)
    assert fig.resume_times, "no restart found work ready to claim"


@pytest.mark.slow
def test_the_checks_catch_damage(tortured):
    """The same checks on the same workspace, after damage a broken engine could cause, must complain."""
    harness, _ = tortured
    conn = sqlite3.connect(harness.db)
    item_id, stage, manifest = conn.execute(
        "SELECT item_id, stage, manifest FROM checkpoints WHERE stale=0 ORDER BY item_id LIMIT 1"
    ).fetchone()
    conn.close()
    first = json.loads(manifest)["files"][0]["path"]
    target = harness.items_root / item_id / stage / first
    data = target.read_bytes()
    target.write_bytes(bytes([data[0] ^ 1]) + data[1:])  # same size, other content
    leftover = harness.items_root / item_id / ".tmp-rendered-99999"
    leftover.mkdir()
    partial = harness.items_root / item_id / "enriched-partial"
    partial.mkdir()
    before = len(harness.fig.problems)
    harness.check("after damage")
    found = "\n".join(harness.fig.problems[before:])
    assert f"{item_id} {stage}" in found and "checksum" in found
    assert ".tmp-rendered-99999" in found and "not swept" in found
    assert "enriched-partial" in found and "partial output" in found
    conn = sqlite3.connect(harness.db)
    conn.execute("DELETE FROM items WHERE kind='clip' AND id = (SELECT MIN(id) FROM items WHERE kind='clip')")
    conn.commit()
    conn.close()
    before = len(harness.fig.problems)
    harness.check("after deleting a clip")
    assert any("lost" in p for p in harness.fig.problems[before:])
