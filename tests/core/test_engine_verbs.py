"""Operator verbs: preview changes nothing, applying is one transaction with one audit event."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from engine.db import queries
from engine.runtime import Engine
from engine.verbs import Operator, VerbError


def snapshot(ws):
    items = [tuple(r) for r in ws.store.read("SELECT * FROM items ORDER BY id")]
    events = ws.store.read_one("SELECT COUNT(*) FROM events")[0]
    return items, events


@pytest.fixture(scope="module")
def finished_template(tmp_path_factory):
    """A demo with failures of several classes, run until idle once per module."""
    from ewgtest import fast_demo_text

    from engine.demo import seed_episodes
    from engine.workspace import init_workspace

    ws = init_workspace(tmp_path_factory.mktemp("template") / "ws", fast_demo_text(True, 0.05))
    seed_episodes(ws, 8)
    eng = Engine(ws, workers=3).start()
    assert eng.run_until_idle(timeout=120)
    eng.stop()
    root = ws.root
    ws.close()
    return root


@pytest.fixture
def finished(finished_template, tmp_path):
    """A private copy of the finished demo for one test."""
    import shutil

    from engine.workspace import open_workspace

    shutil.copytree(finished_template, tmp_path / "ws")
    ws = open_workspace(tmp_path / "ws")
    yield ws
    ws.close()


def ids_with(ws, status, kind="episode"):
    return [
        r["id"]
        for r in ws.store.read("SELECT id FROM items WHERE status=? AND kind=? ORDER BY id", (status, kind))
    ]


def test_dry_run_changes_nothing_for_every_verb(finished):
    ws = finished
    op = Operator(ws, actor="tester")
    failed = ids_with(ws, "failed")
    done = ids_with(ws, "done")
    clips = ids_with(ws, "done", kind="clip")
    before = snapshot(ws)
    previews = [
        op.retry(failed, dry_run=True),
        op.retry(failed=True, dry_run=True),
        op.resume(failed, dry_run=True),
        op.reprocess(done[:2], dry_run=True),
        op.reprocess(done[:1], from_stage="enriched", dry_run=True),
        op.reset(done[:1], dry_run=True),
        op.reset(all_items=True, dry_run=True),
        op.skip(failed, dry_run=True),
        op.rollback(done[0], "transcribed", dry_run=True),
        op.clear_cache(done, dry_run=True),
        op.deep_clean(dry_run=True),
        op.stop(dry_run=True),
        op.pause(dry_run=True),
        op.rerender_clips(clips[:1], dry_run=True),
        op.delete_and_retry_clips(clips[:1], dry_run=True),
        op.retry_all_failed_clips(dry_run=True),
        op.regenerate_all_clips(dry_run=True),
    ]
    assert snapshot(ws) == before
    assert all(not p.applied for p in previews)
    assert previews[0].changes and previews[3].changes[0].stages_rerun == [
        "discovered",
        "transcribed",
        "enriched",
        "editorial",
        "rendered",
    ]


def test_retry_failed_requeues_with_fresh_budget_and_one_audit_event(finished):
    ws = finished
    failed = ids_with(ws, "failed")
    assert failed
    result = Operator(ws, actor="alice").retry(failed=True, reason="service fixed")
    assert result.applied and set(result.item_ids) == set(failed)
    events = queries.events(ws.store)
    assert (
        events[0]["verb"] == "retry"
        and events[0]["actor"] == "alice"
        and events[0]["reason"] == "service fixed"
    )
    assert set(events[0]["affected"]) == set(failed)
    assert events[0]["before"][failed[0]]["status"] == "failed"
    for item_id in failed:
        row = queries.item(ws.store, item_id)
        assert row["status"] == "queued" and row["attempts"] == 0 and row["error_class"] is None


def test_operator_retry_then_success_feeds_effectiveness(finished):
    ws = finished
    Operator(ws, actor="bob").retry(failed=True)
    eng = Engine(ws, workers=3).start()
    assert eng.run_until_idle(timeout=120)
    eng.stop()
    # the demo's persistent and missing-dependency faults fire once, so the retry recovers them
    assert ids_with(ws, "failed") == []
    eff = {e["verb"]: e for e in queries.metrics(ws.store)["action_effectiveness"]}
    assert eff["retry"]["succeeded"] >= 2 and eff["retry"]["refailure_rate"] == 0


def test_retry_a_failure_group(finished):
    ws = finished
    groups = queries.failure_groups(ws.store)
    assert groups
    target = groups[0]
    result = Operator(ws, actor="tester").retry(group=target["fingerprint"])
    assert sorted(result.item_ids) == sorted(target["ids"])
    events = snapshot(ws)[1]
    empty = Operator(ws).retry(group="transcribed|transient|gone")  # matches nothing (issue 11)
    assert empty.nothing_to_do and not empty.applied and snapshot(ws)[1] == events
    with pytest.raises(VerbError, match="is not a failure group fingerprint"):
        Operator(ws).retry(group="nope|nope|nope")


def test_reprocess_from_a_stage_marks_later_checkpoints_stale(finished):
    ws = finished
    item_id = ids_with(ws, "done")[0]
    Operator(ws, actor="tester").reprocess([item_id], from_stage="enriched")
    row = queries.item(ws.store, item_id)
    assert row["stage"] == "transcribed" and row["next_stage"] == "enriched" and row["status"] == "queued"
    stale = {
        r["stage"]: r["stale"]
        for r in ws.store.read("SELECT stage, stale FROM checkpoints WHERE item_id=?", (item_id,))
    }
    assert stale == {"discovered": 0, "transcribed": 0, "enriched": 1, "editorial": 1, "rendered": 1}


def test_rollback_forward_is_refused_and_backwards_works(finished):
    ws = finished
    item_id = ids_with(ws, "done")[0]
    op = Operator(ws, actor="tester")
    op.rollback(item_id, "transcribed")
    with pytest.raises(VerbError, match="move forward"):
        op.rollback(item_id, "editorial")
    with pytest.raises(VerbError, match="Unknown item id"):
        op.rollback("nope", "discovered")


def test_reset_and_skip(finished):
    ws = finished
    op = Operator(ws, actor="tester")
    done = ids_with(ws, "done")[0]
    op.reset([done])
    assert queries.item(ws.store, done)["stage"] == "discovered"
    failed = ids_with(ws, "failed")[0]
    before = queries.item(ws.store, failed)
    op.skip([failed])
    after = queries.item(ws.store, failed)
    assert after["status"] == "queued" and after["stage"] == before["next_stage"]
    cp = ws.store.read_one(
        "SELECT manifest FROM checkpoints WHERE item_id=? AND stage=?", (failed, after["stage"])
    )
    assert json.loads(cp["manifest"])["skipped"] is True
    with pytest.raises(VerbError, match="Name the items to reset"):
        op.reset()


def test_clear_cache_removes_the_cache_folder(finished):
    ws = finished
    item_id = ids_with(ws, "done")[0]
    cache = ws.item_dir(item_id) / "cache"
    cache.mkdir(parents=True)
    (cache / "x.bin").write_bytes(b"1")
    preview = Operator(ws, actor="tester").clear_cache([item_id])
    assert preview.changes[0].cache_dropped and not cache.exists()


def test_clip_verbs(finished):
    ws = finished
    op = Operator(ws, actor="tester")
    clip = ids_with(ws, "done", kind="clip")[0]
    op.rerender_clips([clip])
    assert queries.item(ws.store, clip)["stage"] == "generated"
    op.delete_and_retry_clips([clip])
    assert queries.item(ws.store, clip)["stage"] == "discovered" and not ws.item_dir(clip).exists()
    regenerated = op.regenerate_all_clips()
    assert len(regenerated.changes) == ws.store.read_one("SELECT COUNT(*) FROM items WHERE kind='clip'")[0]
    with pytest.raises(VerbError, match="not a clip"):
        op.retry_clips([ids_with(ws, "done")[0]])


def test_verb_on_a_running_item_fences_the_worker_out(make_demo):
    ws = make_demo(count=1, speed=0.5)
    eng = Engine(ws, workers=1).start()
    item_id = ws.store.read_one("SELECT id FROM items")["id"]
    deadline = time.time() + 10
    while queries.item(ws.store, item_id)["status"] != "running" and time.time() < deadline:
        time.sleep(0.05)
    token = queries.item(ws.store, item_id)["lease_token"]
    preview = Operator(ws, actor="tester").reprocess([item_id])
    assert preview.changes[0].interrupts_run
    row = queries.item(ws.store, item_id)
    assert row["lease_token"] == token + 1
    assert (
        ws.store.read_one("SELECT outcome FROM attempts WHERE lease_token=?", (token,))["outcome"]
        == "cancelled"
    )
    assert eng.run_until_idle(timeout=120)
    eng.stop()
    # exactly one success per stage: the fenced-out worker's late completion was refused
    dupes = ws.store.read(
        "SELECT stage, COUNT(*) n FROM attempts WHERE item_id=? AND outcome='succeeded'"
        " GROUP BY stage HAVING n > 1",
        (item_id,),
    )
    assert dupes == []


def test_extend_clears_a_pending_timeout(make_demo):
    extra = '\n[stages.episode.discovered]\nkind = "python"\ncallable = "stagelib:hang_respecting_cancel"\n'
    ws = make_demo(count=1, extra=extra, stall_after="0.8", dead_after="0.6", stall_policy='"warn"')
    eng = Engine(ws, workers=1).start()
    item_id = ws.store.read_one("SELECT id FROM items")["id"]
    deadline = time.time() + 15
    while queries.item(ws.store, item_id)["verdict"] != "STALLED" and time.time() < deadline:
        time.sleep(0.05)
    assert queries.item(ws.store, item_id)["verdict"] == "STALLED"
    Operator(ws, actor="tester").extend(item_id, 600)
    row = queries.item(ws.store, item_id)
    assert row["deadline_extension"] == 600 and row["verdict"] is None
    eng.stop(force=True)


def test_stop_everything_pauses_and_releases(make_demo):
    ws = make_demo(count=2, speed=0.5)
    eng = Engine(ws, workers=2).start()
    deadline = time.time() + 10
    while eng.busy() < 1 and time.time() < deadline:
        time.sleep(0.05)
    Operator(ws, actor="tester").stop(reason="maintenance window")
    deadline = time.time() + 10
    while eng.busy() and time.time() < deadline:
        time.sleep(0.05)
    statuses = {r["status"] for r in ws.store.read("SELECT status FROM items")}
    assert statuses == {"queued"}
    assert queries.overview(ws.store, time.time()).paused["reason"] == "maintenance window"
    Operator(ws, actor="tester").unpause()
    assert eng.run_until_idle(timeout=120)
    eng.stop()


def test_cli_verbs_dry_run_json_and_audit(finished):
    ws = finished
    root = str(ws.root)
    base = [sys.executable, "-m", "ewg_tui.cli", "-w", root]
    out = subprocess.run(base + ["retry", "--failed", "--dry-run", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["applied"] is False and doc["changes"]
    out = subprocess.run(base + ["retry", "--failed", "--reason", "fixed it"], capture_output=True, text=True)
    assert out.returncode == 0 and "Audit event #" in out.stdout
    out = subprocess.run(base + ["rollback", "nope", "--to", "discovered"], capture_output=True, text=True)
    assert out.returncode == 2 and "Unknown item id" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run(
        base + ["reprocess", ids_with(ws, "done")[0], "--from", "translated"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "is not a stage" in out.stderr
    out = subprocess.run(base + ["--readonly", "pause"], capture_output=True, text=True)
    assert out.returncode == 2 and "--readonly" in out.stderr
    out = subprocess.run(base + ["extend", "x", "-5"], capture_output=True, text=True)
    assert out.returncode == 2


def test_status_json_shape(finished):
    out = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", "-w", str(finished.root), "status", "--json"],
        capture_output=True,
        text=True,
    )
    doc = json.loads(out.stdout)
    assert set(doc) == {"episodes", "clips", "counts", "version"}
    assert {"id", "kind", "stage", "status", "attempts", "verdict", "error_class", "error_message"} <= set(
        doc["episodes"][0]
    )
    assert set(doc["counts"]) == {"episode", "clip"}
    assert sum(doc["counts"]["episode"]["by_status"].values()) == len(doc["episodes"])
