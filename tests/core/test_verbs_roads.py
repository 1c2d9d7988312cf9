"""Verb roads of issue 11: skip on a real stage, reprocess reaching the clips, clip starts, no-op verbs,
stop as previewed, kept failed outputs, Retry Failed Episodes, --where, dead letters, Deep Clean.
Each test failed on the code before its fix."""

from __future__ import annotations

import json
import time

import pytest

from engine.db import queries
from engine.runtime import Engine
from engine.verbs import Operator, VerbError
from ewg_tui.cli import main


def events(ws) -> int:
    return ws.store.read_one("SELECT COUNT(*) FROM events")[0]


def items(ws) -> list[tuple]:
    return [tuple(r) for r in ws.store.read("SELECT * FROM items ORDER BY id")]


def fail(ws, item_id: str, stage: str | None = None, next_stage: str = "discovered", cls="persistent"):
    with ws.store.write() as conn:
        conn.execute(
            "UPDATE items SET status='failed', stage=?, next_stage=?, error_class=?, error_message='boom',"
            " attempts=3, updated_at=? WHERE id=?",
            (stage, next_stage, cls, time.time(), item_id),
        )


def first_id(ws, kind="episode") -> str:
    return ws.store.read_one("SELECT id FROM items WHERE kind=? ORDER BY id", (kind,))["id"]


def run_idle(ws, timeout=60):
    eng = Engine(ws, workers=2).start()
    try:
        assert eng.run_until_idle(timeout=timeout)
    finally:
        eng.stop()


BUILTIN_TRANSCRIBE = '\n[stages.episode.transcribed]\nkind = "builtin"\n'


def test_skip_refuses_a_stage_whose_output_a_later_stage_reads(make_demo, capsys):
    ws = make_demo(count=1, extra=BUILTIN_TRANSCRIBE)
    ep = first_id(ws)
    fail(ws, ep)
    before, n = items(ws), events(ws)
    with pytest.raises(VerbError, match="transcribed reads its output"):
        Operator(ws).skip([ep])
    assert main(["-w", str(ws.root), "skip", ep]) == 2
    assert "skip_fallback" in capsys.readouterr().err
    assert items(ws) == before and events(ws) == n  # nothing changed, no retry loop started


def test_skip_is_allowed_when_the_stage_declares_a_fallback(make_demo):
    extra = BUILTIN_TRANSCRIBE + '\n[stages.episode.discovered]\nkind = "demo"\nskip_fallback = true\n'
    ws = make_demo(count=1, extra=extra)
    ep = first_id(ws)
    fail(ws, ep)
    Operator(ws).skip([ep])
    assert queries.item(ws.store, ep)["next_stage"] == "transcribed"


def test_reprocess_before_editorial_redoes_its_clips_and_drops_those_no_longer_picked(make_demo):
    ws = make_demo(count=1)
    run_idle(ws)
    ep = first_id(ws)
    clips = [r["id"] for r in ws.store.read("SELECT id FROM items WHERE parent_id=? ORDER BY id", (ep,))]
    assert len(clips) == 2
    with ws.store.write() as conn:  # a clip the old editorial picked and the new one will not
        conn.execute(
            "INSERT INTO items (id, kind, parent_id, source, show, title, stage, next_stage, status,"
            " clip_start, clip_end) SELECT ?, kind, parent_id, source, show, title, stage, NULL, 'done', 90, 98"
            " FROM items WHERE id=?",
            (f"{ep}__c09", clips[0]),
        )
    op = Operator(ws)
    preview = op.reprocess([ep], from_stage="transcribed", dry_run=True)
    redo = {c.item_id: c for c in preview.changes if c.kind == "clip"}
    assert set(redo) == {*clips, f"{ep}__c09"}
    assert all("editorial rerun" in c.note for c in redo.values())
    op.reprocess([ep], from_stage="transcribed")
    assert queries.item(ws.store, clips[0])["status"] == "stopped"  # waits: not cut from the old run
    run_idle(ws)
    for clip in clips:
        assert queries.item(ws.store, clip)["status"] == "done"
        generated = ws.store.read("SELECT 1 FROM attempts WHERE item_id=? AND stage='generated'", (clip,))
        assert len(generated) == 2  # redone, not left with the old run's files
    assert queries.item(ws.store, f"{ep}__c09")["status"] == "discarded"


def test_force_reprocess_of_a_clip_starts_at_generated(make_demo):
    ws = make_demo(count=1)
    run_idle(ws)
    clip = first_id(ws, "clip")
    preview = Operator(ws).reprocess([clip])
    assert preview.changes[0].stages_rerun == ["generated", "rendered"]
    row = queries.item(ws.store, clip)
    assert (row["stage"], row["next_stage"], row["status"]) == ("discovered", "generated", "queued")
    run_idle(ws)
    assert queries.item(ws.store, clip)["status"] == "done"


def test_a_verb_that_does_not_apply_to_a_named_item_is_exit_2_and_changes_nothing(make_demo, capsys):
    ws = make_demo(count=2)
    run_idle(ws)
    done = first_id(ws)
    before, n = items(ws), events(ws)
    assert main(["-w", str(ws.root), "retry", done]) == 2
    assert "retry does not apply" in capsys.readouterr().err
    assert main(["-w", str(ws.root), "rollback", done, "--to", "bogus"]) == 2
    assert "no stage 'bogus'" in capsys.readouterr().err
    assert main(["-w", str(ws.root), "retry", "--failed"]) == 0
    assert "Nothing to do" in capsys.readouterr().out
    assert main(["-w", str(ws.root), "reset", "--where", "status=failed"]) == 0
    assert "Nothing to do" in capsys.readouterr().out
    assert items(ws) == before and events(ws) == n


def _running(ws, item_id: str, token: int = 5) -> None:
    with ws.store.write() as conn:
        conn.execute(
            "UPDATE items SET status='running', lease_owner='elsewhere:1', lease_token=?, lease_expires_at=?"
            " WHERE id=?",
            (token, time.time() + 60, item_id),
        )


def test_the_global_stop_applies_what_its_preview_named(make_demo):
    ws = make_demo(count=2)
    a, b = [r["id"] for r in ws.store.read("SELECT id FROM items ORDER BY id")]
    _running(ws, a)
    op = Operator(ws)
    preview = op.stop(None, dry_run=True)
    assert preview.item_ids == [a]
    assert preview.changes[0].after["status"] == "released at a safe point, continues on unpause"
    _running(ws, b)  # started between the preview and the confirmation
    applied = op.apply(preview, reason="maintenance")
    assert applied.item_ids == [a]
    assert queries.item(ws.store, a)["cancel_requested"] == "release"
    assert queries.item(ws.store, b)["cancel_requested"] is None
    assert ws.store.read_one("SELECT value FROM engine_state WHERE key='paused'")["value"] == "1"
    event = queries.events(ws.store)[0]
    assert event["verb"] == "stop" and event["affected"] == [a]


def test_stop_previews_say_what_happens(make_demo):
    ws = make_demo(count=1)
    ep = first_id(ws)
    _running(ws, ep)
    preview = Operator(ws).stop([ep], dry_run=True)
    assert preview.changes[0].after["status"] == "stopped at a safe point"


def test_force_stop_of_all_processing_is_undone_by_unpause(make_demo):
    ws = make_demo(count=2, speed=1.0)
    eng = Engine(ws, workers=2).start()
    try:
        deadline = time.time() + 20
        while not ws.store.read("SELECT 1 FROM items WHERE status='running'") and time.time() < deadline:
            time.sleep(0.05)
        Operator(ws).stop(None, force=True)
        deadline = time.time() + 20
        while ws.store.read("SELECT 1 FROM items WHERE status='running'") and time.time() < deadline:
            time.sleep(0.05)
        statuses = {r["status"] for r in ws.store.read("SELECT status FROM items")}
        assert "stopped" not in statuses and "running" not in statuses  # released, not stopped
        Operator(ws).unpause()
        assert eng.run_until_idle(timeout=60)
    finally:
        eng.stop()
    assert {r["status"] for r in ws.store.read("SELECT status FROM items WHERE kind='episode'")} == {"done"}


def test_retry_keeps_failed_outputs_when_told_to_and_says_so(make_demo):
    ws = make_demo(count=1, auto_cleanup_failed_files="false")
    ep = first_id(ws)
    fail(ws, ep)
    kept = ws.item_dir(ep) / ".failed-discovered-3"
    kept.mkdir(parents=True)
    (kept / "partial.bin").write_bytes(b"x")
    (ws.item_dir(ep) / "cache").mkdir()
    preview = Operator(ws).retry([ep])
    assert "keeps 1 failed output" in preview.changes[0].note
    assert kept.exists() and not (ws.item_dir(ep) / "cache").exists()


def test_retry_failed_episodes_reset_and_reprocess_failed(make_demo, capsys):
    ws = make_demo(count=3)
    a, b, c = [r["id"] for r in ws.store.read("SELECT id FROM items ORDER BY id")]
    fail(ws, a, "transcribed", "enriched")
    fail(ws, b, "discovered", "transcribed")
    for item_id in (a, b):
        (ws.item_dir(item_id) / "cache").mkdir(parents=True)
    assert main(["-w", str(ws.root), "reset", "--failed", "--reason", "retry failed episodes"]) == 0
    for item_id in (a, b):
        row = queries.item(ws.store, item_id)
        assert (row["stage"], row["status"], row["error_class"]) == ("discovered", "queued", None)
        assert not (ws.item_dir(item_id) / "cache").exists()
    assert queries.item(ws.store, c)["status"] == "queued" and queries.item(ws.store, c)["stage"] is None
    fail(ws, c, "enriched", "editorial")
    assert main(["-w", str(ws.root), "reprocess", "--failed"]) == 0
    row = queries.item(ws.store, c)
    assert (row["stage"], row["next_stage"], row["status"]) == (None, "discovered", "queued")


def test_every_verb_takes_where_filters_applied_in_sql(make_demo, capsys):
    ws = make_demo(count=4)
    ids = [r["id"] for r in ws.store.read("SELECT id, show FROM items ORDER BY id")]
    show = queries.item(ws.store, ids[0])["show"]
    for item_id in ids:
        fail(ws, item_id, "discovered", "transcribed", cls="transient" if item_id == ids[0] else "persistent")
    assert main(["-w", str(ws.root), "retry", "--where", "class=transient", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["selection"] == "where class=transient"
    assert queries.item(ws.store, ids[0])["status"] == "queued"
    assert all(queries.item(ws.store, i)["status"] == "failed" for i in ids[1:])
    with ws.store.write() as conn:
        conn.execute("UPDATE items SET updated_at=? WHERE id=?", (time.time() - 7200, ids[1]))
    assert main(["-w", str(ws.root), "discard", "--where", "status=failed", "--where", "older-than=1h"]) == 0
    assert queries.item(ws.store, ids[1])["status"] == "discarded"
    assert main(["-w", str(ws.root), "skip", "--where", f"show={show}", "--where", "stage=transcribed"]) == 0
    assert main(["-w", str(ws.root), "retry", "--where", "colour=red"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_discard_archives_a_failed_item_hidden_by_default_and_retry_brings_it_back(make_demo, capsys):
    ws = make_demo(count=2)
    a, b = [r["id"] for r in ws.store.read("SELECT id FROM items ORDER BY id")]
    fail(ws, a)
    n = events(ws)
    assert main(["-w", str(ws.root), "discard", b]) == 2  # b is not failed: a mistake in the call
    assert events(ws) == n
    assert main(["-w", str(ws.root), "discard", a, "--reason", "bad source"]) == 0
    assert queries.events(ws.store)[0]["verb"] == "discard"
    row = queries.item(ws.store, a)
    assert row["status"] == "discarded" and row["error_message"] == "boom"  # kept
    capsys.readouterr()
    assert main(["-w", str(ws.root), "status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [e["id"] for e in doc["episodes"]] == [b]
    assert doc["counts"]["episode"]["total"] == 1 and doc["counts"]["episode"]["discarded"] == 1
    assert main(["-w", str(ws.root), "status", "--all", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["episodes"]) == 2
    assert queries.count_items(ws.store, queries.ItemFilter()) == 1
    assert not queries.failure_groups(ws.store)
    assert main(["-w", str(ws.root), "retry", "--failed"]) == 0  # dead letters stay out of --failed
    assert queries.item(ws.store, a)["status"] == "discarded"
    assert main(["-w", str(ws.root), "retry", a]) == 0
    assert queries.item(ws.store, a)["status"] == "queued"


def test_deep_clean_clears_failed_caches_and_stale_run_state(make_demo):
    ws = make_demo(count=2)
    a, b = [r["id"] for r in ws.store.read("SELECT id FROM items ORDER BY id")]
    fail(ws, a)
    (ws.item_dir(a) / "cache").mkdir(parents=True)
    (ws.item_dir(b) / "cache").mkdir(parents=True)
    with ws.store.write() as conn:
        conn.execute("UPDATE items SET verdict='STALLED', cancel_requested='stop' WHERE id=?", (b,))
    op = Operator(ws)
    preview = op.deep_clean(dry_run=True, vacuum=False)
    assert (
        "1 cache(s) of failed items" in preview.notes[0]
        and "1 item(s) with stale run state" in preview.notes[0]
    )
    op.deep_clean(vacuum=False)
    assert not (ws.item_dir(a) / "cache").exists() and (ws.item_dir(b) / "cache").exists()
    row = queries.item(ws.store, b)
    assert row["verdict"] is None and row["cancel_requested"] is None
