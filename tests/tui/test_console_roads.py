"""Console roads of issue 11: mark every row matching the filter (preview before any verb), discard a
failed item (a dead letter, hidden until `d`), Retry Failed Episodes, and a confirmed global stop that
applies what its confirmation showed."""

from __future__ import annotations

from console_fixtures import EP
from pilot_helpers import item, make_app, move_to, ready, wait_for

from engine.db import queries
from ewg_tui.screens.confirm_verb import ConfirmVerbScreen


def failed_episodes(ws) -> list[str]:
    return [r["id"] for r in ws.store.read("SELECT id FROM items WHERE kind='episode' AND status='failed'")]


async def confirm(pilot) -> ConfirmVerbScreen:
    app = pilot.app
    screen = await wait_for(
        pilot, lambda: isinstance(app.screen, ConfirmVerbScreen) and app.screen, what="the confirmation"
    )
    await pilot.pause(0.05)
    await pilot.press("tab")
    assert app.focused.id == "yes"
    await pilot.press("enter")
    return screen


async def filter_by(pilot, screen, text: str) -> None:
    await pilot.press("slash", *text, "enter")
    await wait_for(pilot, lambda: screen.filter_text == text and screen.view is not None, what="the filter")
    await wait_for(
        pilot,
        lambda: screen.view.episode_total == queries.count_items(pilot.app.ws.store, screen.episode_filter),
        what="the filtered read",
    )


async def test_mark_matching_marks_every_row_of_the_filter_and_a_verb_previews_first(seeded):
    ws, clock = seeded
    failed = failed_episodes(ws)
    assert len(failed) >= 2
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await filter_by(pilot, screen, "status:failed")
        screen.episodes.focus()
        await pilot.press("M")
        await wait_for(pilot, lambda: len(screen.marked) == len(failed), what="the marks")
        assert set(screen.marked) == set(failed)
        await wait_for(  # notify posts a message: the notice lands a turn of the loop later
            pilot,
            lambda: any(f"Marked {len(failed)} row(s)" in n.message for n in app._notifications),
            what="the count of marked rows",
        )
        await pilot.press("r")  # retry asks nothing for one row; for a filter's rows it previews first
        dialog = await wait_for(
            pilot, lambda: isinstance(app.screen, ConfirmVerbScreen) and app.screen, what="the preview"
        )
        assert sorted(dialog.preview.item_ids) == sorted(failed)
        assert all(item(ws, i)["status"] == "failed" for i in failed)  # the preview changed nothing
        await confirm(pilot)
        await wait_for(pilot, lambda: all(item(ws, i)["status"] == "queued" for i in failed), what="retry")


async def test_discard_hides_a_failed_item_until_d_shows_dead_letters(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[7])
        await pilot.press("H")
        await confirm(pilot)
        await wait_for(pilot, lambda: item(ws, EP[7])["status"] == "discarded", what="discard")
        assert queries.events(ws.store, limit=1)[0]["verb"] == "discard"
        await wait_for(pilot, lambda: EP[7] not in screen.episodes.order, what="the row hidden")
        await pilot.press("d")
        await wait_for(pilot, lambda: EP[7] in screen.episodes.order, what="dead letters shown")
        await move_to(pilot, screen.episodes, EP[7])
        await pilot.press("r")  # retry brings a dead letter back
        await wait_for(pilot, lambda: item(ws, EP[7])["status"] == "queued", what="retry")


async def test_retry_failed_episodes_resets_every_failed_item_after_its_preview(seeded):
    ws, clock = seeded
    failed = [r["id"] for r in ws.store.read("SELECT id FROM items WHERE status='failed'")]
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("F")
        dialog = await confirm(pilot)
        assert sorted(dialog.preview.item_ids) == sorted(failed)
        await wait_for(
            pilot, lambda: all(item(ws, i)["status"] == "queued" for i in failed), what="the reset"
        )
    for item_id in failed:
        row = item(ws, item_id)
        assert row["error_class"] is None and row["attempts"] == 0


async def test_the_confirmed_global_stop_stops_what_the_confirmation_named(seeded):
    ws, clock = seeded
    running = [r["id"] for r in ws.store.read("SELECT id FROM items WHERE status='running' ORDER BY id")]
    assert running
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("S")
        dialog = await wait_for(
            pilot, lambda: isinstance(app.screen, ConfirmVerbScreen) and app.screen, what="the confirmation"
        )
        assert sorted(dialog.preview.item_ids) == running
        late = EP[9]  # starts running after the confirmation was shown
        with ws.store.write() as conn:
            conn.execute(
                "UPDATE items SET status='running', lease_owner='other:1', lease_token=77 WHERE id=?", (late,)
            )
        await confirm(pilot)
        await wait_for(pilot, lambda: queries.events(ws.store, limit=1)[0]["verb"] == "stop", what="stop")
    event = queries.events(ws.store, limit=1)[0]
    assert sorted(event["affected"]) == running
    assert item(ws, late)["cancel_requested"] is None
    assert all(item(ws, i)["cancel_requested"] == "release" for i in running)
