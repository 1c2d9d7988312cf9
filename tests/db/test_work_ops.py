"""The work's named operations (engine/db/work.py) against a real workspace database, on every driver.

State is seeded through the repository (clips created by `upsert_clips`, leases taken by the
claim); each operation is checked for what it writes, what it returns, and that a token that no
longer holds the item changes nothing.
"""

from __future__ import annotations

import json

import pytest

from engine import pipeline
from engine.db import Completion, work
from engine.policy import Decision

T0 = 1_000.0
OWNER = "host-a:101:1"


@pytest.fixture
def store(any_workspace):
    """The store of a fresh workspace, once per database driver (tests/conftest.py)."""
    return any_workspace().store


def batch(*clips: work.ClipCut, episode: str = "ep") -> work.ClipBatch:
    return work.ClipBatch(
        episode_id=episode,
        source="src.mp4",
        show="show",
        kind=pipeline.CLIP,
        first_stage="discovered",
        next_stage="generated",
        target_stage=pipeline.CLIP_STAGES[-1],
        waiting_reason=pipeline.AWAITS_EDITORIAL,
        dropped_reason="dropped by the rerun",
        clips=clips,
    )


def seed(store, *ids: str, episode: str = "ep") -> None:
    with store.write() as unit:
        cuts = (work.ClipCut(i, f"title {i}", 1.0, 2.0) for i in ids)
        assert unit.upsert_clips(batch(*cuts, episode=episode), T0).created == len(ids)


def claim(store, owner: str = OWNER, now: float = T0 + 1):
    got = store.claim(owner, now, 30)
    assert got is not None
    return got


def item(store, item_id: str):
    return store.read_one("SELECT * FROM items WHERE id=?", (item_id,))


def attempts(store, item_id: str):
    return store.read("SELECT * FROM attempts WHERE item_id=? ORDER BY id", (item_id,))


RETRY = Decision("retrying", 1, True, T0 + 60, "retry 1/3 in 60 s")


def test_close_attempt_writes_the_held_attempt_once(store):
    seed(store, "c1")
    c = claim(store)
    with store.write() as unit:
        assert unit.close_attempt(c.item_id, c.lease_token, T0 + 5, "crashed", spent=False)
    with store.write() as unit:  # a stale token (another writer took the item meanwhile): nothing
        assert not unit.close_attempt(c.item_id, c.lease_token + 1, T0 + 6, "cancelled")
    [row] = attempts(store, c.item_id)
    assert (row["outcome"], row["worker"], row["lease_token"], row["number"]) == (
        "crashed",
        OWNER,
        c.lease_token,
        1,
    )
    assert row["duration"] == pytest.approx(4.0) and not row["spent"]


def test_close_attempt_closes_a_row_an_older_ewg_opened_in_place(store):
    seed(store, "c1")
    c = claim(store)
    with store.write() as unit:  # what an older claim wrote (raw: no operation opens attempts now)
        unit.execute(
            "INSERT INTO attempts (item_id, stage, number, worker, lease_token, started_at, spent)"
            " VALUES (?,?,?,?,?,?,?)",
            (c.item_id, c.stage, 1, OWNER, c.lease_token, T0, True),
        )
        assert unit.close_attempt(c.item_id, c.lease_token, T0 + 3, "failed", ("transient", "m", "d"), "x")
    [row] = attempts(store, c.item_id)
    assert (row["outcome"], row["error_message"], row["decision"]) == ("failed", "m", "x")
    assert row["duration"] == pytest.approx(3.0)


def test_settle_failure_takes_the_decided_road_and_is_fenced(store):
    seed(store, "c1")
    c = claim(store)
    with store.write() as unit:
        assert not unit.settle_failure(
            c.item_id, c.lease_token - 1, T0 + 2, "failed", RETRY, "transient", "late", "", "s"
        )
    assert item(store, c.item_id)["status"] == "running" and attempts(store, c.item_id) == []
    with store.write() as unit:
        assert unit.settle_failure(
            c.item_id, c.lease_token, T0 + 2, "failed", RETRY, "transient", "boom", "trace", "retry it"
        )
    row = item(store, c.item_id)
    assert (row["status"], row["attempts"], row["next_attempt_at"], row["lease_owner"]) == (
        "retrying",
        1,
        T0 + 60,
        None,
    )
    assert (row["error_class"], row["error_message"], row["error_suggestion"]) == (
        "transient",
        "boom",
        "retry it",
    )
    assert row["lease_token"] == c.lease_token and row["blocked_reason"] is None
    [a] = attempts(store, c.item_id)
    assert (a["outcome"], a["decision"], bool(a["spent"])) == ("failed", RETRY.text, True)


def test_a_blocked_road_keeps_its_reason(store):
    seed(store, "c1")
    c = claim(store)
    blocked = Decision("blocked", 0, False, T0, "blocked: disk full")
    with store.write() as unit:
        assert unit.settle_failure(
            c.item_id,
            c.lease_token,
            T0 + 2,
            "failed",
            blocked,
            "resource",
            "ENOSPC",
            "",
            "free space",
            blocked_reason="resource: disk full",
        )
    assert item(store, c.item_id)["blocked_reason"] == "resource: disk full"
    assert work.pending_work(store, "resource: ") == 1  # comes back by itself: still pending
    assert work.pending_work(store, "service ") == 0


def test_release_gives_back_without_spending_and_bumps_when_asked(store):
    seed(store, "c1")
    c = claim(store)
    with store.write() as unit:
        assert unit.release(c.item_id, c.lease_token, T0 + 3, "cancelled", "stopped", "stopped by operator")
    row = item(store, c.item_id)
    assert (row["status"], row["lease_token"], row["progress_message"], row["attempts"]) == (
        "stopped",
        c.lease_token,
        "stopped by operator",
        0,
    )
    assert not attempts(store, c.item_id)[0]["spent"]
    with store.write() as unit:  # released already: the token holds nothing any more
        assert not unit.release(c.item_id, c.lease_token, T0 + 4, "cancelled", "queued", "again")
    assert item(store, c.item_id)["status"] == "stopped" and len(attempts(store, c.item_id)) == 1


def test_rescue_queues_counts_and_records_then_fences_the_dead_owner(store):
    seed(store, "c1")
    c = claim(store)
    with store.write() as unit:
        assert unit.rescue(
            c.item_id, c.lease_token, T0 + 9, outcome="dead", why="owner gone", actor="watchdog"
        )
    row = item(store, c.item_id)
    assert (row["status"], row["rescues"], row["verdict"], row["lease_token"]) == (
        "queued",
        1,
        "DEAD",
        c.lease_token + 1,
    )
    [event] = store.read("SELECT * FROM events WHERE verb='rescue'")
    assert (event["actor"], event["reason"], event["result"]) == ("watchdog", "owner gone", "queued")
    assert json.loads(event["affected"]) == [c.item_id]
    with store.write() as unit:  # a second sweep that read the same lease changes nothing
        assert not unit.rescue(c.item_id, c.lease_token, T0 + 10, outcome="dead", why="again", actor="engine")
    assert item(store, c.item_id)["rescues"] == 1
    assert len(store.read("SELECT * FROM events WHERE verb='rescue'")) == 1


def test_rescue_that_gives_up_fails_the_item_with_a_reason(store):
    seed(store, "c1")
    c = claim(store)
    with store.write() as unit:
        assert unit.rescue(
            c.item_id,
            c.lease_token,
            T0 + 9,
            outcome="crashed",
            why="gone",
            actor="engine",
            give_up=("persistent", "worker died 3 times on this stage", "check its log"),
        )
    row = item(store, c.item_id)
    assert (row["status"], row["error_class"], row["error_message"], row["error_at"]) == (
        "failed",
        "persistent",
        "worker died 3 times on this stage",
        T0 + 9,
    )
    assert store.read_one("SELECT result FROM events WHERE verb='rescue'")[0] == "failed: too many rescues"


def test_held_attempt_verdict_cancel_and_stage_process_are_fenced(store):
    seed(store, "c1")
    c = claim(store)
    with store.write() as unit:
        held = unit.held_attempt(c.item_id, c.lease_token)
        assert held == work.HeldAttempt(pipeline.CLIP, "generated", 0, T0 + 1)
        assert unit.held_attempt(c.item_id, c.lease_token + 1) is None
        assert unit.set_verdict(c.item_id, c.lease_token, "STALLED")
        assert not unit.set_verdict(c.item_id, c.lease_token + 1, None)
        assert unit.request_cancel(c.item_id, c.lease_token, "stall", T0 + 2)
        assert not unit.request_cancel(c.item_id, c.lease_token, "timeout", T0 + 3)  # asked already
        assert unit.record_stage_process(c.item_id, c.lease_token, 4242, 4242)
        assert not unit.record_stage_process(c.item_id, c.lease_token + 1, 1, 1)
    row = item(store, c.item_id)
    assert (row["verdict"], row["cancel_requested"], row["cancel_requested_at"]) == (
        "STALLED",
        "stall",
        T0 + 2,
    )
    assert work.stage_process(store, c.item_id, c.lease_token) == work.StageProcess(OWNER, 4242, 4242)
    assert work.stage_process(store, c.item_id, c.lease_token + 1) is None


def test_running_items_and_live_leases_read_every_owner(store):
    seed(store, "c1", "c2", "c3")
    a = claim(store, "host-a:1:1")
    b = claim(store, "host-b:2:2")
    running = work.running_items(store)
    assert [(r.id, r.owner, r.token) for r in running] == sorted(
        [(a.item_id, "host-a:1:1", a.lease_token), (b.item_id, "host-b:2:2", b.lease_token)]
    )
    first = running[0]
    assert first.kind == pipeline.CLIP and first.stage == "generated" and first.rescues == 0
    assert first.progress == 0.0 and first.deadline_extension == 0.0 and first.cancel_requested is None
    assert work.live_leases(store) == {(a.item_id, a.lease_token), (b.item_id, b.lease_token)}
    assert work.pending_work(store, "resource: ") == 3


def test_recent_durations_are_the_latest_successes_of_the_stage(store):
    seed(store, "c1", "c2")
    for n, seconds in enumerate((3.0, 5.0)):
        c = claim(store, now=T0 + 10 * n)
        done = Completion(c.item_id, c.lease_token, c.stage, "rendered", "{}", None, 1, OWNER, c.started_at)
        with store.write() as unit:
            assert store.complete_batch(unit, [done], c.started_at + seconds) == {c.item_id}
    assert work.recent_durations(store, pipeline.CLIP, "generated") == [5.0, 3.0]
    assert work.recent_durations(store, pipeline.CLIP, "generated", limit=1) == [5.0]
    assert work.recent_durations(store, pipeline.CLIP, "rendered") == []


def test_record_event_returns_ids_in_order_and_set_switch_upserts(store):
    with store.write() as unit:
        first = unit.record_event(T0, "engine", "recover", result="rescued 0, swept 1")
        second = unit.record_event(
            T0 + 1, "op", "pause", selection="engine", affected=["a"], before={"a": 1}, after={"a": 2}
        )
        unit.set_switch("paused", "1", reason="lunch", actor="op", now=T0)
        unit.set_switch("paused", "0", reason="back", actor="op2", now=T0 + 5)
    assert second > first
    row = store.read_one("SELECT * FROM events WHERE id=?", (second,))
    assert (json.loads(row["before"]), json.loads(row["after"]), json.loads(row["affected"])) == (
        {"a": 1},
        {"a": 2},
        ["a"],
    )
    [switch] = store.read("SELECT * FROM engine_state WHERE key='paused'")
    assert (switch["value"], switch["reason"], switch["actor"], switch["at"]) == ("0", "back", "op2", T0 + 5)


def test_engine_rows_register_beat_stop_and_go(store):
    with store.write() as unit:
        unit.register_engine("host-a:1:1", "host-a", 1, T0, 4)
        unit.register_engine("host-b:2:2", "host-b", 2, T0, 2)
        unit.engine_beat("host-a:1:1", T0 + 5, busy=3, workers=4, state="running", executions=7)
    row = store.read_one("SELECT * FROM engines WHERE owner='host-a:1:1'")
    assert (row["heartbeat_at"], row["busy"], row["executions"]) == (T0 + 5, 3, 7)
    assert work.live_engines(store) == [
        work.EngineRow("host-a:1:1", T0 + 5),
        work.EngineRow("host-b:2:2", T0),
    ]
    with store.write() as unit:
        assert unit.mark_engine_gone("host-b:2:2", T0 + 99, "watchdog")
        assert not unit.mark_engine_gone("host-b:2:2", T0 + 100, "watchdog")  # once
        unit.engine_stopped("host-a:1:1", T0 + 6)
    assert work.live_engines(store) == []
    assert tuple(store.read_one("SELECT state, busy FROM engines WHERE owner='host-a:1:1'")) == ("stopped", 0)
    assert len(store.read("SELECT * FROM events WHERE verb='engine_gone'")) == 1
    with store.write() as unit:
        unit.register_engine("host-a:1:1", "host-a", 1, T0 + 7, 8)  # the same identity starts again
        assert unit.engine_owners() == ["host-a:1:1", "host-b:2:2"]
        assert unit.forget_engine("host-b:2:2")
        assert not unit.forget_engine("host-b:2:2")
    row = store.read_one("SELECT * FROM engines WHERE owner='host-a:1:1'")
    assert (row["state"], row["workers"], row["started_at"]) == ("running", 8, T0)


def test_savepoint_undoes_only_its_part_and_lets_the_error_through(store):
    with store.write() as unit:
        unit.set_switch("kept", "1", reason="", actor="t", now=T0)
        with pytest.raises(OSError), unit.savepoint():
            unit.set_switch("undone", "1", reason="", actor="t", now=T0)
            raise OSError("the checkpoint rename failed")
        with unit.savepoint():
            unit.set_switch("after", "1", reason="", actor="t", now=T0)
    keys = {r[0] for r in store.read("SELECT key FROM engine_state")}
    assert {"kept", "after"} <= keys and "undone" not in keys


def test_upsert_clips_creates_retitles_and_recuts(store):
    seed(store, "ep__a", "ep__b")
    c = claim(store)  # ep__a, the first by id
    assert c.item_id == "ep__a"
    with store.write() as unit:
        settled = unit.upsert_clips(
            batch(
                work.ClipCut("ep__a", "a moved", 5.0, 9.0),  # running: its attempt is fenced out
                work.ClipCut("ep__b", "b renamed", 1.0, 2.0),
                work.ClipCut("ep__c", "c new", 3.0, 4.0),
            ),
            T0 + 5,
        )
    assert settled == work.ClipsSettled(created=1, recut=1, retitled=1)
    a = item(store, "ep__a")
    assert (a["status"], a["lease_owner"], a["clip_start"], a["clip_end"], a["title"]) == (
        "queued",
        None,
        5.0,
        9.0,
        "a moved",
    )
    assert a["lease_token"] == c.lease_token + 1 and a["next_stage"] == "generated"
    [cut] = attempts(store, "ep__a")
    assert (cut["outcome"], cut["lease_token"], bool(cut["spent"])) == ("cancelled", c.lease_token, False)
    assert "re-cut" in cut["decision"]
    assert item(store, "ep__b")["title"] == "b renamed"
    new = item(store, "ep__c")
    assert (new["kind"], new["parent_id"], new["source"], new["target_stage"], new["status"]) == (
        pipeline.CLIP,
        "ep",
        "src.mp4",
        "rendered",
        "queued",
    )
    with store.write() as unit:  # the worker of the old cut comes back late: its token holds nothing
        assert not unit.release("ep__a", c.lease_token, T0 + 6, "cancelled", "queued", "late")


def test_upsert_clips_marks_a_recut_clips_checkpoints_stale(store):
    seed(store, "ep__a")
    c = claim(store)
    done = Completion(c.item_id, c.lease_token, c.stage, "rendered", "{}", None, 1, OWNER, c.started_at)
    with store.write() as unit:
        store.complete_batch(unit, [done], T0 + 2)
    with store.write() as unit:
        assert unit.upsert_clips(batch(work.ClipCut("ep__a", "t", 7.0, 8.0)), T0 + 3).recut == 1
    assert [bool(r[0]) for r in store.read("SELECT stale FROM checkpoints WHERE item_id='ep__a'")] == [True]


def test_upsert_clips_requeues_picked_waiting_clips_and_drops_the_rest(store):
    seed(store, "ep__a", "ep__b")
    seed(store, "other__x", episode="other")
    with store.write() as unit:  # what a verb leaves (OperatorOps owns that write; seeded raw here)
        unit.execute(
            "UPDATE items SET status='stopped', blocked_reason=? WHERE id IN ('ep__a', 'ep__b', 'other__x')",
            (pipeline.AWAITS_EDITORIAL,),
        )
    with store.write() as unit:
        settled = unit.upsert_clips(batch(work.ClipCut("ep__a", "title ep__a", 1.0, 2.0)), T0 + 4)
    assert (settled.requeued, settled.dropped, settled.retitled) == (1, 1, 1)
    a, b = item(store, "ep__a"), item(store, "ep__b")
    assert (a["status"], a["blocked_reason"], a["next_attempt_at"]) == ("queued", None, T0 + 4)
    assert (b["status"], b["blocked_reason"]) == ("discarded", "dropped by the rerun")
    assert item(store, "other__x")["status"] == "stopped"  # another episode's clip: untouched
