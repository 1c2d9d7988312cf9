"""Filter, multi-select, read-only, attach mode, windowing, help, palette, detail and quit."""

from __future__ import annotations

from pathlib import Path

import pytest
from console_fixtures import EP
from pilot_helpers import before_each_read, item, make_app, move_to, ready, row_text, wait_for

from engine.db import queries
from engine.demo import seed_episodes
from engine.verbs import Operator
from engine.workspace import open_workspace
from ewg_tui.screens.help import HelpScreen
from ewg_tui.screens.item_detail import ItemDetailScreen
from ewg_tui.screens.verb_catalog import VERBS
from ewg_tui.widgets.filter_bar import FilterBar, FilterError, parse_filter


def test_parse_filter_understands_every_part():
    flt = parse_filter('status:failed,retrying stage:enriched show:"Tech Talk" stuck corrupt')
    assert flt.statuses == ("failed", "retrying")
    assert flt.stage == "enriched" and flt.show == "Tech Talk" and flt.stuck_only and flt.text == "corrupt"
    with pytest.raises(FilterError, match="unknown status 'bogus'"):
        parse_filter("status:bogus")
    with pytest.raises(FilterError, match="unknown stage"):
        parse_filter("stage:nowhere")


async def test_filter_narrows_in_sql_and_escape_leaves_it(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        assert screen.episodes.total == 10
        await pilot.press("slash")
        assert isinstance(app.focused, FilterBar)
        await pilot.press(*"status:failed")
        await wait_for(pilot, lambda: screen.episodes.total == 2, what="the filter to apply")
        assert set(screen.episodes.order) == {EP[7], EP[8]}
        assert "filter: status:failed" in str(screen.episodes.border_title)
        await pilot.press("enter")  # keep the filter, back to the table
        assert app.focused is screen.episodes and screen.episodes.total == 2
        await pilot.press("slash")
        await pilot.press("escape")  # esc leaves the filter
        await wait_for(pilot, lambda: screen.episodes.total == 10, what="the filter to clear")
        await pilot.press("slash", *"stuck")
        await wait_for(pilot, lambda: screen.episodes.order == [EP[4]], what="stuck filter")
        await pilot.press("escape", "slash", *"show:morning chip")
        await wait_for(pilot, lambda: screen.episodes.order == [EP[7]], what="show + free text filter")


async def test_invalid_filter_says_why_and_keeps_the_rows(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        await pilot.press("slash", *"status:bogus")
        bar = screen.query_one(FilterBar)
        await wait_for(pilot, lambda: bar.has_class("-invalid"), what="the bar to flag the error")
        assert "unknown status 'bogus'" in str(bar.border_subtitle)
        assert screen.episodes.total == 10


async def test_space_marks_rows_for_a_bulk_verb(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[6])
        await pilot.press("space")
        await move_to(pilot, screen.episodes, EP[7])
        await pilot.press("space")
        assert set(screen.marked) == {EP[6], EP[7]}
        assert row_text(screen.episodes, EP[7], "mark") == "●"
        await move_to(pilot, screen.episodes, EP[1])  # the cursor elsewhere: the marks still decide
        await pilot.press("r")
        await wait_for(
            pilot,
            lambda: item(ws, EP[6])["status"] == item(ws, EP[7])["status"] == "queued",
            what="both marked items to be retried",
        )
        assert item(ws, EP[1])["status"] == "done"
        assert screen.marked == {}
        await wait_for(pilot, lambda: row_text(screen.episodes, EP[7], "mark") == " ", what="marks cleared")


async def test_escape_clears_marks(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[7])
        await pilot.press("space", "escape")
        assert screen.marked == {}


async def test_readonly_shows_everything_and_runs_nothing(seeded):
    ws, clock = seeded
    app = make_app(ws, clock, readonly=True)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        assert screen.episodes.total == 10
        assert "READ-ONLY" in str(screen.query_one("#engine-header").render())
        await move_to(pilot, screen.episodes, EP[7])
        for spec in VERBS:
            assert screen.check_action(spec.action, ()) is None, spec.action
        await pilot.press("r", "R", "s", "A", "P", "D")
        await pilot.pause(0.2)
        assert screen.app.screen is screen  # no choice or confirmation opened
        palette_actions = {action for _t, _h, action in screen.palette_commands()}
        assert not palette_actions & {spec.action for spec in VERBS}
        await screen.run_action("retry")  # the palette path runs actions like this
        await pilot.pause(0.2)
        assert queries.events(ws.store) == []
        assert item(ws, EP[7])["status"] == "failed"


async def test_attach_mode_shows_changes_by_another_writer(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    assert app.engine is None
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await wait_for(
            pilot, lambda: row_text(screen.episodes, EP[8], "status") == "✗ needs operator", what="failed row"
        )
        other = open_workspace(Path(ws.root), clock=clock)  # a second process' connection
        try:
            Operator(other, actor="headless").retry([EP[8]], reason="from the CLI")
        finally:
            other.close()
        await wait_for(
            pilot,
            lambda: row_text(screen.episodes, EP[8], "status") == "· queued",
            what="the other writer's change to show",
        )
        header = str(screen.query_one("#engine-header").render())
        assert "attached" in header and "workers 2/2" in header


async def test_windowed_table_reads_only_the_visible_rows(tmp_path, seeded):
    ws, clock = seeded
    seed_episodes(ws, 1500, start=11)
    app = make_app(ws, clock)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        table = screen.episodes
        assert table.total == 1510
        assert table.row_count == len(table.order) == table.window_size < 20
        table.focus()
        await pilot.press("G")
        last = queries.item_window(ws.store, queries.ItemFilter(), offset=1509, limit=1)[0]["id"]
        await wait_for(pilot, lambda: table.current_id == last, what="G to reach the last episode")
        assert table.row_count == table.window_size
        assert table.position_label.endswith("of 1510")
        await pilot.press("g")
        first = queries.item_window(ws.store, queries.ItemFilter(), limit=1)[0]["id"]
        await wait_for(pilot, lambda: table.current_id == first, what="g to reach the first episode")
        await pilot.press("pagedown")
        await wait_for(pilot, lambda: table.window_offset == table.window_size, what="page down to slide")


async def test_rows_update_in_place_without_rebuilding(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        table = screen.episodes
        removed: list = []
        original_remove, original_clear = table.remove_row, table.clear
        table.remove_row = lambda key: (removed.append(key), original_remove(key))[1]
        table.clear = lambda *a, **k: (removed.append("clear"), original_clear(*a, **k))[1]
        Operator(ws).stop([EP[10]])
        await wait_for(pilot, lambda: row_text(table, EP[10], "status") == "■ stopped", what="the change")
        clock.advance(3)  # countdowns and elapsed times move
        await wait_for(
            pilot, lambda: row_text(table, EP[3], "status") == "↻ retry 2/3 in 11s", what="countdown"
        )
        assert removed == []


async def test_retry_countdown_and_verdict_are_shown(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        assert row_text(screen.episodes, EP[3], "status") == "↻ retry 2/3 in 14s"
        assert row_text(screen.episodes, EP[4], "verdict") == "⚠ STALLED"
        assert row_text(screen.episodes, EP[2], "elapsed") == "1m15s"
        assert row_text(screen.episodes, EP[2], "attempt") == "1/3"


async def test_error_detail_follows_the_cursor_and_names_the_key(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[7])
        text = str(screen.query_one("#error-text").render())
        assert "persistent" in text and "no readable video stream [demo]" in text
        assert "R force reprocess" in text and "error: no video stream found" in text
        await move_to(pilot, screen.episodes, EP[4])
        await wait_for(
            pilot, lambda: "e extend" in str(screen.query_one("#error-text").render()), what="stuck hint"
        )


async def test_clip_table_follows_the_selected_episode_and_a_shows_all(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[1])
        await wait_for(pilot, lambda: screen.clips.total == 3, what="the episode's clips")
        await move_to(pilot, screen.episodes, EP[7])
        await wait_for(pilot, lambda: screen.clips.total == 0, what="no clips")
        await pilot.press("a")
        await wait_for(
            pilot,
            lambda: screen.clips.total == 3 and "All clips" in str(screen.clips.border_title),
            what="all clips",
        )


async def test_tab_switches_panes(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        assert app.focused is screen.episodes
        await pilot.press("tab")
        assert app.focused is screen.clips
        await pilot.press("tab")
        assert app.focused.id == "error-detail"
        await pilot.press("1")
        assert app.focused is screen.episodes


async def test_p_pauses_live_updates(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await pilot.press("p")
        assert "updates paused" in str(screen.query_one("#engine-header").render())
        Operator(ws).stop([EP[10]])
        await pilot.pause(1.0)
        assert row_text(screen.episodes, EP[10], "status") == "· queued"
        await pilot.press("p")
        await wait_for(
            pilot, lambda: row_text(screen.episodes, EP[10], "status") == "■ stopped", what="resume"
        )


async def test_help_lists_every_verb_key(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = {e.key for e in app.screen.entries}
        assert {spec.key for spec in VERBS} <= keys
        assert {"/", "space", "p", "q"} <= keys
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_palette_offers_the_verbs_that_apply(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[7])
        titles = {title for title, _h, _a in screen.palette_commands()}
        assert {"Retry", "Force reprocess", "Skip stage", "Retry all failed", "Filter", "Help"} <= titles
        assert "Extend timeout" not in titles  # EP7 is not running
        await pilot.press("colon")
        await wait_for(pilot, lambda: app.screen.__class__.__name__ == "CommandPalette", what="the palette")
        await pilot.press(*"retry all failed")
        await pilot.pause(0.5)
        await pilot.press("enter")
        confirm = await wait_for(
            pilot,
            lambda: app.screen.__class__.__name__ == "ConfirmVerbScreen" and app.screen,
            what="the confirmation from the palette",
        )
        assert {c.item_id for c in confirm.preview.changes} == {EP[7], EP[8], f"{EP[1]}__c02"}


async def test_enter_opens_item_detail(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[1])
        await pilot.press("enter")
        detail = await wait_for(
            pilot, lambda: isinstance(app.screen, ItemDetailScreen) and app.screen, what="the detail screen"
        )
        await wait_for(
            pilot, lambda: detail.query_one("#detail-checkpoints").row_count == 5, what="checkpoints"
        )
        assert detail.query_one("#detail-clips").row_count == 3
        assert "2.0 KB" in str(detail.query_one("#detail-checkpoints").get_row_at(0))
        await pilot.press("escape")
        assert app.screen is screen


async def test_q_quits_at_once_without_an_engine(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("q")
        await pilot.pause(0.1)
    assert app.return_code == 0


async def test_audit_log_shows_verbs_and_metrics(seeded):
    from ewg_tui.screens.audit_log import AuditLogScreen

    ws, clock = seeded
    Operator(ws, actor="alice").retry([EP[7]], reason="source replaced")
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("l")
        audit = await wait_for(
            pilot, lambda: isinstance(app.screen, AuditLogScreen) and app.screen, what="the audit log"
        )
        table = audit.query_one("DataTable")
        await wait_for(pilot, lambda: table.row_count == 1, what="the event")
        row = [getattr(c, "plain", c) for c in table.get_row_at(0)]
        assert row[2:] == ["alice", "retry", EP[7], "source replaced", "retry: 1 item(s) changed"]
        metrics = str(audit.query_one("#audit-metrics").render())
        assert "retry: 0 ok, 0 failed again, 1 pending" in metrics
        Operator(ws, actor="bob").stop([EP[10]])
        await wait_for(pilot, lambda: table.row_count == 2, what="a new event to appear")
        assert [getattr(c, "plain", c) for c in table.get_row_at(0)][2] == "bob"  # newest first
        await pilot.press("escape")
        assert not isinstance(app.screen, AuditLogScreen)


async def test_fast_key_presses_at_the_window_edge_all_count(seeded):
    ws, clock = seeded
    seed_episodes(ws, 300, start=11)
    app = make_app(ws, clock)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        table = screen.episodes
        table.focus()
        table.move_cursor(row=len(table.order) - 1)
        await pilot.pause(0.1)
        start = table.window_offset
        for _ in range(5):  # five slides requested before any read comes back
            table.action_cursor_down()
        await wait_for(pilot, lambda: table.window_offset == start + 5, what="all five slides")


async def test_a_newer_view_interrupts_a_stale_read_and_is_read_instead(seeded, monkeypatch):
    """Typing a filter must not wait for the scan of the text typed before: that read is cancelled."""
    from engine.db import ReadInterrupted
    from ewg_tui.screens import main as main_module

    ws, clock = seeded
    real = main_module.read_view
    interrupted: list[str] = []

    def read_view(reader, request, now, shown=None):
        if request.episode_filter.text == "slow":  # the stale view: a scan that takes minutes
            try:
                reader.read(
                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
                    " WHERE x < 1000000000) SELECT max(x) FROM c"
                )
            except ReadInterrupted:
                interrupted.append(request.episode_filter.text)
                raise
        return real(reader, request, now, shown)

    monkeypatch.setattr(main_module, "read_view", read_view)
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await pilot.press("slash", *"slow")
        await wait_for(
            pilot, lambda: screen._polling and screen.episode_filter.text == "slow", what="the slow read"
        )
        await pilot.pause(0.2)
        await pilot.press(*["backspace"] * 4, *"budget")
        await wait_for(pilot, lambda: interrupted == ["slow"], what="the stale read to be interrupted")
        await wait_for(
            pilot,
            lambda: "filter: budget" in str(screen.episodes.border_title),
            what="the newer view to be shown",
        )
        assert not any(n.message.startswith("Reading the workspace failed") for n in app._notifications)


async def test_an_idle_console_repaints_no_table(seeded):
    """Nothing changed, nothing redrawn: over SSH every repaint of a table is kilobytes on the wire."""
    ws, clock = seeded
    app = make_app(ws, clock, poll_interval=0.1)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await pilot.pause(0.5)
        repaints: list[str] = []
        for table in (screen.episodes, screen.clips):
            real = table.refresh
            table.refresh = lambda *a, _real=real, _id=table.id, **kw: (
                repaints.append(_id),
                _real(*a, **kw),
            )[1]
        polls = screen.polls
        await pilot.pause(1.0)
        assert screen.polls - polls >= 5  # it kept reading the workspace...
        assert repaints == []  # ...and found nothing to redraw


async def test_the_filter_suggests_fields_and_values_as_you_type(seeded):
    from engine.demo import SHOWS

    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await pilot.press("slash", *"sta")
        bar = screen.query_one(FilterBar)
        await wait_for(pilot, lambda: bar._suggestion == "status:", what="a field suggestion")
        assert "status:" in str(bar.border_subtitle) and "stage:" in str(bar.border_subtitle)
        await pilot.press("right")  # takes it
        assert bar.value == "status:"
        await pilot.press("f")
        await wait_for(pilot, lambda: bar._suggestion == "status:failed", what="a value suggestion")
        await pilot.press("right", "space", *"show:")
        await wait_for(pilot, lambda: bar.suggestions.shows, what="the show names, read off the loop")
        assert "Tech Talk Weekly" in bar.suggestions.shows and set(bar.suggestions.shows) <= set(SHOWS)
        await pilot.press(*'"Te')  # names with spaces are quoted, as the filter reads them
        want = 'status:failed show:"Tech Talk Weekly"'
        await wait_for(pilot, lambda: bar._suggestion == want, what="a show suggestion")
        await pilot.press("right")
        await wait_for(pilot, lambda: screen.filter_text == want, what="the suggested filter to apply")


async def test_sort_by_key_and_header_click_is_done_in_sql_and_kept(seeded):
    from textual.widgets import DataTable

    from engine.db.queries import ItemFilter

    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(160, 40)) as pilot:
        screen = await ready(pilot)
        table = screen.episodes
        natural = list(table.order)
        await pilot.press("o")  # the next column after id: status
        want = [
            r["id"] for r in queries.item_window(ws.store, ItemFilter(kind="episode"), "status", False, 0, 50)
        ]
        await wait_for(pilot, lambda: table.order == want[: len(table.order)], what="rows sorted by status")
        assert table.order != natural and "by status ↑" in str(table.border_title)
        await pilot.press("O")
        want = [
            r["id"] for r in queries.item_window(ws.store, ItemFilter(kind="episode"), "status", True, 0, 50)
        ]
        await wait_for(pilot, lambda: table.order == want[: len(table.order)], what="reversed")
        assert "by status ↓" in str(table.border_title)
        key = next(k for k in table.columns if k.value == "show")
        table.post_message(DataTable.HeaderSelected(table, key, list(table.columns).index(key), label=None))
        want = [
            r["id"] for r in queries.item_window(ws.store, ItemFilter(kind="episode"), "show", False, 0, 50)
        ]
        await wait_for(
            pilot, lambda: table.order == want[: len(table.order)], what="sorted by the clicked column"
        )
        assert "by show ↑" in str(table.border_title)
        screen.poll(True)  # a refresh keeps the sort
        await pilot.pause(0.3)
        assert table.order == want[: len(table.order)] and table.sort_by == "show"


async def test_a_window_slide_renders_only_cells_not_drawn_before_and_clicks_land_on_their_row(seeded):
    """A DataTable renders every cell again after any change (its cache key holds a change counter):
    a slide by one row cost a Rich render of all 121 cells. The table keys cells by what they show, so
    a slide renders only the looks not drawn before; the row and column of each cell (the mouse's
    metadata) still follow its place."""
    from textual.renderables.styled import Styled

    ws, clock = seeded
    seed_episodes(ws, 300, start=11)
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        table = screen.episodes
        table.focus()
        await pilot.pause(0.2)
        for _ in range(len(table.order)):
            await pilot.press("j")
        await pilot.pause(0.2)
        offset = table.window_offset
        renders: list[int] = []
        console = app.console
        original = console.render_lines
        console.render_lines = lambda r, *a, **k: (
            renders.append(isinstance(r, Styled)),
            original(r, *a, **k),
        )[1]
        try:
            await pilot.press("j")  # past the last row: the window slides by one
            await wait_for(pilot, lambda: table.window_offset == offset + 1, what="the slide")
            await pilot.pause(0.2)
        finally:
            console.render_lines = original
        cells = len(table.order) * len(table.columns)
        assert 0 < sum(renders) < cells / 4  # the new row's id, title and a few others; not every cell
        target = 3
        top = table.content_region.y - table.region.y + (1 if table.show_header else 0)  # title, header
        await pilot.click(table, offset=(30, top + target))
        await wait_for(pilot, lambda: table.cursor_row == target, what="the click to move the cursor")
        assert table.window_offset == offset + 1


async def test_free_text_rows_come_before_their_count_and_keys_work_meanwhile(tmp_path, monkeypatch):
    """Counting a free-text filter reads every row; the matches are shown first ("counting" in the
    title), the total follows, and a key pressed meanwhile is not lost or clamped to a guess."""
    import threading

    from console_fixtures import seeded_workspace

    ws, clock = seeded_workspace(tmp_path / "ws", count=60)
    monkeypatch.setattr(queries, "TEXT_CAP", 1)  # the head's scan never counts: the count must follow
    real_count = queries.count_items
    release = threading.Event()

    def count_items(store, flt):
        if flt.text == "ep" and flt.kind == "episode":
            assert release.wait(10), "the test never released the count"
        return real_count(store, flt)

    monkeypatch.setattr(queries, "count_items", count_items)
    total = real_count(ws.store, queries.ItemFilter(text="ep"))
    try:
        app = make_app(ws, clock)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await ready(pilot)
            await pilot.press("slash", *"ep")
            table = screen.episodes
            await wait_for(
                pilot,
                lambda: str(table.border_title).endswith("counting  filter: ep"),
                what="the rows before their count",
            )
            assert len(table.order) == table.window_size and table.window_offset == 0
            await pilot.press("enter", "G")  # to the last window before the end is known
            release.set()
            await wait_for(
                pilot,
                lambda: table.window_offset == total - table.window_size and not table.counting,
                what="the last window once counted",
            )
            assert f"of {total}" in str(table.border_title) and "counting" not in str(table.border_title)
            assert table.cursor_row == len(table.order) - 1
            await pilot.press("g")  # back to the top: the refreshes of a counted filter count first
            await wait_for(pilot, lambda: table.window_offset == 0, what="the first window")
            titles: list[str] = []
            real_title = table.show_title
            monkeypatch.setattr(table, "show_title", lambda text: (titles.append(text), real_title(text)))
            await pilot.pause(1.0)  # three polls and more
            assert screen.polls >= 3 and not [t for t in titles if "counting" in t], titles
    finally:
        release.set()
        ws.close()


async def test_a_letter_typed_onto_a_filter_reads_from_its_first_match(seeded, monkeypatch):
    """Typing narrows: the matches of "ep" are among those of "e", so the first look starts at the
    first row shown for "e"; deleting a letter widens, and the read starts from the top again."""
    ws, clock = seeded
    starts: list[tuple[str, str | None]] = []

    def record(request):
        if request.episode_filter.text:
            starts.append((request.episode_filter.text, request.text_start))

    before_each_read(monkeypatch, record)
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        table = screen.episodes
        await pilot.press("slash", "e")
        await wait_for(pilot, lambda: str(table.border_title).endswith("filter: e"), what="the rows of e")
        first_of_e = table.order[0]
        await pilot.press("p")
        await wait_for(pilot, lambda: str(table.border_title).endswith("filter: ep"), what="the rows of ep")
        await pilot.press("backspace")
        await wait_for(
            pilot, lambda: str(table.border_title).endswith("filter: e"), what="the rows of e again"
        )
        assert starts[0] == ("e", None)  # the unfiltered rows say nothing about where e begins
        assert ("ep", first_of_e) in starts
        assert starts[-1] == ("e", None)


async def test_leaving_a_filter_shows_the_unfiltered_rows_at_once_then_reads_them_again(seeded, monkeypatch):
    """esc draws the unfiltered first window as last read in the frame that closes the bar; the read
    it starts brings it up to date (here: a title changed while the filter was open)."""
    import threading

    ws, clock = seeded
    gate = threading.Event()
    gate.set()

    def hold(request):
        if not request.episode_filter.statuses:
            assert gate.wait(10), "the test never released the read"

    before_each_read(monkeypatch, hold)
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        table = screen.episodes
        before = list(table.order)
        first = before[0]
        await pilot.press("slash", *"status:failed")
        await wait_for(pilot, lambda: table.total == 2, what="the filtered rows")
        with ws.store.write() as unit:  # changed while the filter is open
            unit.execute("UPDATE items SET title='Renamed meanwhile' WHERE id=?", (first,))
        gate.clear()  # the unfiltered read now waits
        await pilot.press("escape")
        await wait_for(pilot, lambda: "filter:" not in str(table.border_title), what="the bar to close")
        assert table.order == before  # the snapshot, while its read waits
        assert table.rows_by_id[first]["title"] != "Renamed meanwhile"
        gate.set()
        await wait_for(
            pilot, lambda: table.rows_by_id[first]["title"] == "Renamed meanwhile", what="the fresh read"
        )


def test_a_whole_read_supersedes_a_queued_partial_one_and_never_the_reverse():
    """Textual asks the queued (older) message whether the newer one behind it may take its place."""
    from ewg_tui.messages import ViewRead

    full, partial = ViewRead(None), ViewRead(None, partial=True)
    assert partial.can_replace(ViewRead(None))  # the whole read follows: the rows-first one is dropped
    assert full.can_replace(ViewRead(None))  # a newer whole read replaces an older one, as before
    assert not full.can_replace(ViewRead(None, partial=True))  # a partial never drops a whole read
    assert not partial.can_replace(ViewRead(None, partial=True))
