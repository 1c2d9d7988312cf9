"""The operator's named operations (engine/db/operator.py): a verb's change to an item is a
compare-and-swap on what it planned from, so an item another worker moved between the plan and the
write (on PostgreSQL, another host's commit) is reported as changed and never overwritten. Every
test runs on SQLite and on a real PostgreSQL (tests/conftest.py `any_workspace`)."""

from __future__ import annotations

import threading
import time

import pytest

from engine.db import operator as ops
from engine.db import queries
from engine.db.operator import ItemFilter, OperatorOps, Term
from engine.verbs import CHANGED, Operator, VerbError, finish_pending_removals, parse_where
from engine.workspace import add_episode


@pytest.fixture
def make_ws(any_workspace):
    """make_ws(count) -> a workspace on the backend under test with `count` new episodes."""

    def make(count: int):
        ws = any_workspace()
        for n in range(count):
            assert add_episode(ws, f"ep{n:04d}", f"/media/ep{n:04d}.mp4", show="show", title=f"ep{n}")
        return ws

    return make


def _ids(ws) -> list[str]:
    return [r["id"] for r in ws.store.read("SELECT id FROM items WHERE kind='episode' ORDER BY id")]


def _running(ws, item_id: str, token: int = 5) -> None:
    with ws.store.write() as unit:
        unit.execute(
            "UPDATE items SET status='running', next_stage='discovered', lease_owner='elsewhere:1',"
            " lease_token=?, lease_expires_at=?, started_at=? WHERE id=?",
            (token, time.time() + 60, time.time(), item_id),
        )


def _complete(unit, item_id: str) -> None:
    """What another worker's completion does to the row: the stage done, the lease given back."""
    unit.execute(
        "UPDATE items SET status='queued', stage='discovered', next_stage='transcribed', lease_owner=NULL,"
        " lease_expires_at=NULL WHERE id=?",
        (item_id,),
    )


def _row(ws, item_id: str) -> dict:
    return dict(ws.store.read_one("SELECT * FROM items WHERE id=?", (item_id,)))


def _attempts(ws, item_id: str) -> list[dict]:
    return [dict(r) for r in ws.store.read("SELECT * FROM attempts WHERE item_id=?", (item_id,))]


def test_change_item_swaps_only_what_was_planned(make_ws):
    ws = make_ws(2)
    a, _ = _ids(ws)
    _running(ws, a, token=5)
    with ws.store.write() as unit:
        (planned,) = unit.select_items([a])
        assert (planned.status, planned.lease_token) == ("running", 5)
        _complete(unit, a)  # lands between the plan and the write
        assert not unit.change_item(
            a, planned.status, planned.lease_token, {"status": "stopped"}, fence_out=True
        )
    moved = _row(ws, a)
    assert (moved["status"], moved["stage"], moved["lease_token"]) == ("queued", "discovered", 5)

    with ws.store.write() as unit:
        (now_held,) = unit.select_items([a])
        assert unit.change_item(
            a, now_held.status, now_held.lease_token, {"status": "stopped"}, fence_out=True
        )
    assert (_row(ws, a)["status"], _row(ws, a)["lease_token"]) == ("stopped", 6)


def test_change_item_refuses_a_column_no_verb_sets(make_ws):
    ws = make_ws(1)
    (a,) = _ids(ws)
    with ws.store.write() as unit, pytest.raises(ValueError, match="lease_token"):
        unit.change_item(a, "queued", 0, {"lease_token": 99})


def test_a_verb_does_not_overwrite_an_item_a_worker_completed_while_it_ran(
    request, backend, make_ws, monkeypatch
):
    ws = make_ws(2)
    a, b = _ids(ws)
    _running(ws, a, token=5)
    _running(ws, b, token=7)
    select = OperatorOps.select_items

    def select_then_a_completes(unit, ids):
        found = select(unit, ids)
        _complete(unit, a)  # another host's worker commits after the verb read its rows
        return found

    monkeypatch.setattr(OperatorOps, "select_items", select_then_a_completes)
    events = len(queries.events(ws.store))
    preview = Operator(ws).reprocess([a, b], reason="redo")

    assert preview.applied and preview.item_ids == [b]
    assert preview.skipped == [(a, CHANGED)]
    kept = _row(ws, a)  # the worker's result stands: no requeue, no token bump, no cancelled attempt
    assert (kept["status"], kept["stage"], kept["lease_token"]) == ("queued", "discovered", 5)
    assert _attempts(ws, a) == []
    taken = _row(ws, b)  # the one that did not move is taken over, its worker fenced out
    assert (taken["status"], taken["lease_token"]) == ("queued", 8)
    assert [t["outcome"] for t in _attempts(ws, b)] == ["cancelled"]
    event = queries.events(ws.store)[0]
    assert len(queries.events(ws.store)) == events + 1 and event["verb"] == "reprocess"
    assert a not in event["affected"] and b in event["affected"]


def test_a_verb_whose_every_item_moved_writes_nothing(make_ws, monkeypatch):
    ws = make_ws(1)
    (a,) = _ids(ws)
    _running(ws, a, token=3)
    select = OperatorOps.select_items

    def select_then_a_completes(unit, ids):
        found = select(unit, ids)
        _complete(unit, a)
        return found

    monkeypatch.setattr(OperatorOps, "select_items", select_then_a_completes)
    before = len(queries.events(ws.store))
    preview = Operator(ws).stop([a], force=True)
    assert not preview.applied and preview.skipped == [(a, CHANGED)]
    assert "nothing to do" in preview.notes
    assert len(queries.events(ws.store)) == before
    assert _row(ws, a)["cancel_requested"] is None


def test_a_previewed_verb_leaves_an_item_that_moved_before_the_confirmation(make_ws):
    ws = make_ws(2)
    a, b = _ids(ws)
    _running(ws, a, token=5)
    _running(ws, b, token=7)
    op = Operator(ws)
    preview = op.stop([a, b], force=True, dry_run=True)
    assert preview.item_ids == [a, b] and not preview.applied
    with ws.store.write() as unit:
        _complete(unit, a)
    done = op.apply(preview, reason="confirmed")
    assert done.item_ids == [b] and done.skipped == [(a, CHANGED)]
    assert _row(ws, a)["cancel_requested"] is None and _row(ws, a)["status"] == "queued"
    assert _row(ws, b)["cancel_requested"] == "force"


def test_filters_match_any_case_and_take_the_users_wildcards_literally(make_ws):
    ws = make_ws(3)
    a, b, c = _ids(ws)
    with ws.store.write() as unit:
        for item_id, show in ((a, "Tech Talk"), (b, "50% Off"), (c, "under_score")):
            unit.execute("UPDATE items SET show=? WHERE id=?", (show, item_id))
        unit.execute("UPDATE items SET status='discarded' WHERE id=?", (c,))

    def ids(*terms: Term) -> list[str]:
        return [i.id for i in ops.Unlocked(ws.store).select_matching(ItemFilter(terms))]

    assert ids(Term("show", ("tech",))) == [a]
    assert ids(Term("show", ("%",))) == [b]  # not "everything"
    assert ids(Term("show", ("_",))) == []  # c has one, but it is discarded
    assert ids(Term("show", ("_",)), Term("status", ("discarded",))) == [c]
    assert ids(Term("show", ("TECH", "off"))) == [a, b]  # values are alternatives
    assert ids(Term("show", ("tech",)), Term("show", ("off",))) == []  # terms must all match
    assert ids() == [a, b]  # discarded left out unless named
    with pytest.raises(ValueError, match="no filter term"):
        Term("lease_token", (1,))


def test_file_holds_merge_and_are_released_only_by_their_owner(make_ws):
    ws = make_ws(1)
    (a,) = _ids(ws)
    with ws.store.write() as unit:
        assert unit.hold_files(a, ["cache"], "host:1", "ana", 1.0) == ["cache"]
    with ws.store.write() as unit:  # a second verb before the first removed anything: it does both
        assert unit.hold_files(a, ["", "cache"], "host:2", "bo", 2.0) == ["cache", ""]
    (held,) = ops.read_pending_removals(ws.store)
    assert (held.item_id, held.owner, held.names, held.at) == (a, "host:2", ("cache", ""), 2.0)
    with ws.store.write() as unit:
        assert not unit.release_files(a, "host:1")  # taken over by host:2, which finishes it
        assert unit.release_files(a, "host:2")
        assert not unit.release_files(a, "host:2")
    assert ops.read_pending_removals(ws.store) == []


def test_a_finished_removal_is_forgotten_only_if_nobody_took_it_over(make_ws):
    ws = make_ws(1)
    (a,) = _ids(ws)
    with ws.store.write() as unit:
        unit.hold_files(a, ["cache"], "gone-host:1", "ana", 1.0)
    (read,) = ops.read_pending_removals(ws.store)
    with ws.store.write() as unit:
        unit.hold_files(a, ["x"], "gone-host:2", "bo", 2.0)  # another verb held it since
        assert not unit.finish_removal(read)
    (now_held,) = ops.read_pending_removals(ws.store)
    assert now_held.names == ("cache", "x")
    with ws.store.write() as unit:
        assert unit.finish_removal(now_held)
    assert ops.read_pending_removals(ws.store) == []


def test_unreadable_holds_remove_nothing_outside_the_item(make_ws):
    ws = make_ws(1)
    (a,) = _ids(ws)
    with ws.store.write() as unit:
        unit.execute(
            "INSERT INTO engine_state (key, value, reason, actor, at) VALUES (?,?,?,?,?)",
            (ops.PENDING_FILES + a, '{"owner": "x", "names": ["../other", "..", "cache", 3]}', "", "", 0.0),
        )
        unit.execute(
            "INSERT INTO engine_state (key, value, reason, actor, at) VALUES (?,?,?,?,?)",
            (ops.PENDING_FILES + "b", "not json", "", "", 0.0),
        )
    got = {r.item_id: (r.owner, r.names) for r in ops.read_pending_removals(ws.store)}
    assert got == {a: ("x", ("cache",)), "b": ("", ())}
    assert finish_pending_removals(ws) == 2  # neither owner is alive: both finished and forgotten
    assert ops.read_pending_removals(ws.store) == []


def test_deep_clean_keeps_the_folder_of_a_checkpoint_republished_since_it_was_read(
    request, backend, make_ws, monkeypatch
):
    ws = make_ws(1)
    (a,) = _ids(ws)
    folder = ws.item_dir(a) / "transcribed"
    folder.mkdir(parents=True)
    (folder / "out.txt").write_text("fresh")
    with ws.store.write() as unit:
        unit.execute(
            "INSERT INTO checkpoints (item_id, stage, manifest, created_at, stale) VALUES (?,?,?,?,TRUE)",
            (a, "transcribed", "{}", 1.0),
        )
    drop = OperatorOps.drop_stale_checkpoints

    def republished_first(unit, checkpoints):
        unit.execute("UPDATE checkpoints SET stale=FALSE WHERE item_id=?", (a,))  # a worker published it
        return drop(unit, checkpoints)

    monkeypatch.setattr(OperatorOps, "drop_stale_checkpoints", republished_first)
    preview = Operator(ws).deep_clean(vacuum=False)
    assert preview.applied
    assert (folder / "out.txt").read_text() == "fresh"
    assert ws.store.read_one("SELECT stale FROM checkpoints WHERE item_id=?", (a,))["stale"] == 0


def test_reads_return_values_not_rows(make_ws):
    ws = make_ws(2)
    a, b = _ids(ws)
    _running(ws, a, token=4)
    (lease,) = ops.read_running_leases(ws.store)
    assert (lease.id, lease.lease_token, lease.lease_owner) == (a, 4, "elsewhere:1")
    assert ops.read_kinds(ws.store, [a, b, "nope"]) == {a: "episode", b: "episode"}
    assert ops.read_item_ids(ws.store, statuses=("running",)) == [a]
    assert ops.read_item_ids(ws.store, kind="clip", parents=[a, b]) == []
    assert ops.read_paused(ws.store) is False
    assert isinstance(ops.Unlocked(ws.store).select_items([b, a])[0], ops.ItemState)
    assert [i.id for i in ops.Unlocked(ws.store).select_items([b, a, b])] == [b, a]


def test_a_where_term_without_a_value_is_a_clear_mistake(make_ws, capsys):
    from ewg_tui.cli import main

    ws = make_ws(1)
    with pytest.raises(VerbError, match="at least one value after status="):
        parse_where(["status=,"], 0.0)
    assert main(["-w", str(ws.root), "retry", "--where", "show=,"]) == 2
    assert "at least one value after show=" in capsys.readouterr().err
    where = parse_where(["status=failed show=Tech", "older-than=1h"], 7200.0)
    assert where.filter == ItemFilter(
        (Term("status", ("failed",)), Term("show", ("Tech",)), Term("updated_before", (3600.0,)))
    )
    assert where.text == "where status=failed show=Tech older-than=1h"


def test_a_second_hosts_verb_waits_for_the_first_and_cannot_overwrite_it(make_ws):
    """On PostgreSQL the unit's selection holds the rows (FOR UPDATE); on SQLite the one writer does.
    Either way a second verb plans from what the first left, and a change planned before is refused."""
    ws = make_ws(1)
    (a,) = _ids(ws)
    _running(ws, a, token=5)
    seen: dict = {}
    selected = threading.Event()

    def second_host():
        selected.wait(10)
        started = time.monotonic()
        with ws.store.write() as unit:  # this thread's own connection
            (item,) = unit.select_items([a])
            seen["waited"], seen["item"] = time.monotonic() - started, item
            seen["swap"] = unit.change_item(a, "running", 5, {"status": "stopped"})  # planned before

    other = threading.Thread(target=second_host)
    other.start()
    with ws.store.write() as unit:
        (item,) = unit.select_items([a])
        selected.set()
        time.sleep(0.5)
        assert "item" not in seen  # still waiting on this unit
        assert unit.change_item(a, item.status, item.lease_token, {"status": "queued"}, fence_out=True)
    other.join(30)
    assert seen["waited"] >= 0.4
    assert (seen["item"].status, seen["item"].lease_token) == ("queued", 6)
    assert seen["swap"] is False
    assert (_row(ws, a)["status"], _row(ws, a)["lease_token"]) == ("queued", 6)


def test_deep_clean_keeps_what_started_or_appeared_since_it_listed_the_folders(
    request, backend, make_ws, monkeypatch
):
    ws = make_ws(1)
    (a,) = _ids(ws)
    temp = ws.item_dir(a) / ".tmp-transcribed-6"  # the attempt that starts after the listing
    temp.mkdir(parents=True)
    (temp / "part.txt").write_text("being written")
    newcomer = ws.items_root / "ep9999"  # an item another host adds after the listing
    (newcomer / "discovered").mkdir(parents=True)
    (newcomer / "discovered" / "manifest.json").write_text("{}")
    drop = OperatorOps.drop_stale_checkpoints

    def meanwhile(unit, checkpoints):  # the first statement of deep clean's unit
        unit.execute(
            "UPDATE items SET status='running', lease_token=6, lease_owner='elsewhere:1' WHERE id=?", (a,)
        )
        unit.execute(
            "INSERT INTO items (id, kind, source, status, created_at, updated_at) VALUES (?,?,?,?,?,?)",
            ("ep9999", "episode", "/media/x.mp4", "queued", 1.0, 1.0),
        )
        return drop(unit, checkpoints)

    preview = Operator(ws).deep_clean(dry_run=True)
    assert {f"delete {temp}", f"delete {newcomer}"} <= set(preview.notes)  # what the listing found
    monkeypatch.setattr(OperatorOps, "drop_stale_checkpoints", meanwhile)
    assert Operator(ws).deep_clean(vacuum=False).applied
    assert (temp / "part.txt").read_text() == "being written"
    assert (newcomer / "discovered" / "manifest.json").is_file()
    assert ops.read_pending_removals(ws.store) == []
