"""Every verb path: key -> (choice) -> confirmation -> engine state changed -> the table shows it."""

from __future__ import annotations

import json

import pytest
from console_fixtures import EP
from pilot_helpers import item, make_app, move_to, ready, row_text, wait_for

from engine.db import queries
from ewg_tui.screens.choice import ChoiceScreen
from ewg_tui.screens.confirm_verb import ConfirmVerbScreen

CLIP1, CLIP2, CLIP3 = (f"{EP[1]}__c0{n}" for n in (1, 2, 3))


def last_event(ws) -> dict:
    return queries.events(ws.store, limit=1)[0]


async def confirm_yes(pilot, reason: str = "") -> ConfirmVerbScreen:
    app = pilot.app
    screen = await wait_for(
        pilot, lambda: isinstance(app.screen, ConfirmVerbScreen) and app.screen, what="the confirmation"
    )
    await pilot.pause(0.05)
    assert app.focused is not None and app.focused.id == "no", "No must be focused"
    if reason:
        app.screen.query_one("#reason").focus()
        await pilot.press(*reason)
        await pilot.press("enter")  # submitting the reason moves focus to Yes
    else:
        await pilot.press("tab")
    assert app.focused.id == "yes"
    await pilot.press("enter")
    return screen


# (key, table, item, choice presses, confirm, check on the item row after, expected status text in the table)
ITEM_VERBS = [
    ("r", "episodes", EP[7], None, False, lambda r: r["status"] == "queued" and r["attempts"] == 0, "queued"),
    ("u", "episodes", EP[6], None, False, lambda r: r["status"] == "queued", "queued"),
    (
        "R",
        "episodes",
        EP[8],
        ["enter"],
        True,
        lambda r: r["stage"] is None and r["status"] == "queued",
        "queued",
    ),
    (
        "R",
        "episodes",
        EP[10],
        ["down", "down", "enter"],
        True,
        lambda r: r["stage"] == "transcribed" and r["next_stage"] == "enriched",
        "queued",
    ),
    (
        "Z",
        "episodes",
        EP[6],
        None,
        True,
        lambda r: r["stage"] == "discovered" and r["status"] == "queued",
        "queued",
    ),
    (
        "s",
        "episodes",
        EP[7],
        None,
        True,
        lambda r: r["stage"] == "discovered" and r["status"] == "queued",
        "queued",
    ),
    ("B", "episodes", EP[10], ["enter"], True, lambda r: r["stage"] == "discovered", "queued"),
    ("x", "episodes", EP[10], None, False, lambda r: r["status"] == "stopped", "stopped"),
    ("X", "episodes", EP[2], None, True, lambda r: r["cancel_requested"] == "force", "running"),
    (
        "e",
        "episodes",
        EP[4],
        ["enter"],
        False,
        lambda r: r["deadline_extension"] == 300 and r["verdict"] is None,
        "running",
    ),
    (
        "E",
        "clips",
        CLIP1,
        None,
        True,
        lambda r: r["stage"] == "generated" and r["status"] == "queued",
        "queued",
    ),
    (
        "ctrl+d",
        "clips",
        CLIP2,
        None,
        True,
        lambda r: r["stage"] == "discovered" and r["status"] == "queued",
        "queued",
    ),
    (
        "ctrl+k",
        "clips",
        CLIP2,
        None,
        True,
        lambda r: r["stage"] == "discovered" and r["status"] == "queued",
        "queued",
    ),
    ("r", "clips", CLIP2, None, False, lambda r: r["status"] == "queued", "queued"),
]


@pytest.mark.parametrize(
    "key,table_id,item_id,choices,confirm,check,shown",
    ITEM_VERBS,
    ids=[f"{v[0]}-{v[2][-9:]}" for v in ITEM_VERBS],
)
async def test_item_verb_path(seeded, key, table_id, item_id, choices, confirm, check, shown):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        if table_id == "clips":
            await move_to(pilot, screen.episodes, EP[1])
        table = screen.query_one(f"#{table_id}")
        await move_to(pilot, table, item_id)
        before = item(ws, item_id)
        assert screen.check_action(screen_action(key), ()) is True
        await pilot.press(key)
        if choices:
            await wait_for(pilot, lambda: isinstance(app.screen, ChoiceScreen), what="the choice")
            await pilot.press(*choices)
        if confirm:
            await confirm_yes(pilot, reason="because test")
        await wait_for(pilot, lambda: check(item(ws, item_id)), what=f"{key} to change {item_id}")
        assert item(ws, item_id) != before
        await wait_for(
            pilot,
            lambda: row_text(table, item_id, "status").partition(" ")[2].startswith(shown),
            what=f"the table to show {shown}",
        )
        event = last_event(ws)
        assert event["actor"] == "tester" and item_id in (event["affected"] or [])
        if confirm:
            assert event["reason"] == "because test"


def screen_action(key: str) -> str:
    from ewg_tui.screens.verb_catalog import VERBS

    return next(v.action for v in VERBS if v.key == key)


async def test_confirmation_defaults_to_no(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[7])
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmVerbScreen), what="the confirmation")
        preview_text = str(app.screen.query_one("#confirm-preview Static").render())
        assert EP[7] in preview_text
        await pilot.press("enter")  # No is focused: enter declines
        await wait_for(
            pilot, lambda: not isinstance(app.screen, ConfirmVerbScreen), what="the modal to close"
        )
        await pilot.pause(0.2)
        assert item(ws, EP[7])["stage"] is None and item(ws, EP[7])["status"] == "failed"
        assert not [e for e in queries.events(ws.store) if e["verb"] == "skip"]


@pytest.mark.parametrize(
    "key,verb,check",
    [
        ("A", "retry", lambda ws: item(ws, EP[7])["status"] == item(ws, EP[8])["status"] == "queued"),
        (
            "ctrl+a",
            "retry",
            lambda ws: item(ws, CLIP2)["status"] == "queued" and item(ws, EP[7])["status"] == "failed",
        ),
        (
            "S",
            "stop",
            lambda ws: (
                item(ws, EP[2])["cancel_requested"] == "release"
                and ws.store.read_one("SELECT value FROM engine_state WHERE key='paused'")["value"] == "1"
            ),
        ),
        ("D", "deep_clean", lambda ws: any(e["verb"] == "deep_clean" for e in queries.events(ws.store))),
    ],
)
async def test_workspace_verb_path(seeded, key, verb, check):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press(key)
        await confirm_yes(pilot)
        await wait_for(pilot, lambda: check(ws), what=f"{key} to apply")
        assert last_event(ws)["verb"] == verb


async def test_regenerate_all_clips_of_selected_episode(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[1])
        await pilot.press("ctrl+g")
        modal = await confirm_yes(pilot)
        assert {c.item_id for c in modal.preview.changes} == {CLIP1, CLIP2, CLIP3}
        await wait_for(
            pilot,
            lambda: all(item(ws, c)["stage"] == "discovered" for c in (CLIP1, CLIP2, CLIP3)),
            what="all clips reset to generation",
        )
        await wait_for(
            pilot, lambda: row_text(screen.clips, CLIP1, "status") == "· queued", what="clip table"
        )


async def test_pause_and_resume_engine(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)

        def paused():
            row = ws.store.read_one("SELECT value FROM engine_state WHERE key='paused'")
            return bool(row and row["value"])

        await pilot.press("P")
        await wait_for(pilot, paused, what="the engine to pause")
        await wait_for(pilot, lambda: screen.view.overview.paused is not None, what="the header to see it")
        header = str(screen.query_one("#engine-header").render())
        assert "paused" in header
        await pilot.press("P")
        await wait_for(pilot, lambda: not paused(), what="the engine to resume")


async def test_verb_that_does_not_apply_is_greyed_and_refused(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[1])  # done: nothing to retry, stop or extend
        for action in ("retry", "resume", "stop", "extend", "skip"):
            assert screen.check_action(action, ()) is None, action
        await pilot.press("r")  # a greyed binding does not run
        await pilot.pause(0.2)
        assert not queries.events(ws.store)


async def test_follow_up_reports_success_after_retry(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[7])
        await pilot.press("r")
        await wait_for(pilot, lambda: EP[7] in screen.followed, what="the item to be followed")
        clock.advance(5)
        with ws.store.write() as conn:  # another worker runs the stage and succeeds
            conn.execute(
                "INSERT INTO attempts (item_id, stage, number, worker, lease_token, started_at, ended_at,"
                " outcome, duration, spent) VALUES (?,?,?,?,?,?,?,?,?,1)",
                (EP[7], "discovered", 1, "w", 9, clock.now() - 2, clock.now(), "succeeded", 2.0),
            )
        await wait_for(pilot, lambda: EP[7] not in screen.followed, what="the follow-up")
        # App.notify posts a message: the notice is in app._notifications one turn of the loop later,
        # so checking right away failed whenever the test woke first (often, under load).
        await wait_for(
            pilot,
            lambda: any("succeeded after retry" in n.message for n in app._notifications),
            what="the Recovered notice",
        )


async def test_verb_error_is_shown_as_a_sentence(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[9])  # never discovered: no clips to regenerate
        screen.start_verb(
            __import__("ewg_tui.screens.verb_catalog", fromlist=["x"]).VERBS_BY_ACTION["regenerate_clips"]
        )
        await wait_for(pilot, lambda: any(n.severity == "error" for n in app._notifications), what="an error")
        message = next(n.message for n in app._notifications if n.severity == "error")
        assert "no clips to regenerate" in message


async def test_audit_event_records_selection(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[8])
        await pilot.press("r")
        await wait_for(pilot, lambda: item(ws, EP[8])["status"] == "queued", what="retry")
        row = ws.store.read_one("SELECT * FROM events ORDER BY id DESC LIMIT 1")
        assert row["verb"] == "retry" and json.loads(row["affected"]) == [EP[8]]


async def test_retry_a_failure_group_from_the_groups_screen(seeded):
    from ewg_tui.screens.failure_groups import FailureGroupsScreen

    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("f")
        groups = await wait_for(
            pilot,
            lambda: isinstance(app.screen, FailureGroupsScreen) and app.screen.groups and app.screen,
            what="the failure groups",
        )
        assert [g["count"] for g in groups.groups] == [1, 1, 1]
        target = next(g for g in groups.groups if g["error_class"] == "missing_dependency")
        table = groups.query_one("DataTable")
        table.move_cursor(row=table.get_row_index(target["fingerprint"]))
        await pilot.press("enter")
        modal = await confirm_yes(pilot)
        assert [c.item_id for c in modal.preview.changes] == [EP[8]]
        await wait_for(pilot, lambda: item(ws, EP[8])["status"] == "queued", what="the group retried")
        assert item(ws, EP[7])["status"] == "failed"
        assert last_event(ws)["selection"].startswith("failure group")


async def test_intervene_on_stuck_work_terminates_and_retries(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[7])
        assert screen.check_action("intervene", ()) is None  # not running: nothing to intervene in
        await move_to(pilot, screen.episodes, EP[4])
        assert screen.check_action("intervene", ()) is True
        await pilot.press("i")
        choice = await wait_for(
            pilot, lambda: isinstance(app.screen, ChoiceScreen) and app.screen, what="the intervention dialog"
        )
        assert "STALLED" in choice.title_text and "no progress for 5m10s" in choice.title_text
        await pilot.press("down", "enter")  # terminate and retry
        modal = await confirm_yes(pilot)
        assert modal.preview.changes[0].interrupts_run
        await wait_for(
            pilot, lambda: item(ws, EP[4])["status"] == "queued", what="the stuck run to be replaced"
        )
        row = item(ws, EP[4])
        assert row["stage"] == "enriched" and row["next_stage"] == "editorial" and row["verdict"] is None
        await wait_for(pilot, lambda: row_text(screen.episodes, EP[4], "verdict") == "", what="the table")


async def test_choice_menus_move_with_j_and_k_and_only_undoable_choices_skip_the_question(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[4])
        await pilot.press("i")
        await wait_for(pilot, lambda: isinstance(app.screen, ChoiceScreen), what="the intervention dialog")
        await pilot.press("j", "j", "k", "enter")  # down twice, up once: terminate and retry
        modal = await wait_for(
            pilot, lambda: isinstance(app.screen, ConfirmVerbScreen) and app.screen, what="the question"
        )
        assert modal.preview.changes[0].interrupts_run  # not undoable: it asks
        await pilot.press("escape")
        await wait_for(
            pilot, lambda: not isinstance(app.screen, ConfirmVerbScreen), what="the dialog to close"
        )
        await pilot.press("i")
        await wait_for(pilot, lambda: isinstance(app.screen, ChoiceScreen), what="the intervention dialog")
        await pilot.press("enter")  # wait longer
        await wait_for(pilot, lambda: isinstance(app.screen, ChoiceScreen), what="how long")
        await pilot.press("j", "enter")  # the second duration; extending is undoable: no question
        await wait_for(pilot, lambda: item(ws, EP[4])["deadline_extension"] == 900, what="the extension")
        assert not isinstance(app.screen, ConfirmVerbScreen)
