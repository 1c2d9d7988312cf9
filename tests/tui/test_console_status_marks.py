"""Status must be told apart everywhere (issue 12): glyphs, per-mode looks, 80x24 columns, the legend, the
first-run hint, the road of a failed item and its progress."""

from __future__ import annotations

import os
import re
import stat

from console_fixtures import EP
from pilot_helpers import make_app, ready, row_text, wait_for
from rich.color import ColorSystem
from textual.color import Color

from ewg_tui.widgets import formatting as fmt

STATES = ("done", "running", "retrying", "blocked", "stopped", "failed", "queued")


def test_every_status_and_verdict_has_its_own_glyph_and_look_in_every_mode():
    keys = STATES + fmt.VERDICTS
    assert len({fmt.glyph(k) for k in keys}) == len(keys)
    for mode, table in fmt.PALETTE.items():
        if mode == "mono":
            continue  # no colour: the glyph tells them apart, attributes rank them (below)
        states = [table[k] for k in STATES]
        assert len(set(states)) == len(states), mode  # no two statuses drawn alike
        assert table["failed"].bold and table["STALLED"].reverse, mode
    for mode in ("dark", "light"):  # truecolor themes stay distinct once a 256-colour terminal downgrades
        downgraded = {
            Color.parse(fmt.PALETTE[mode][k].color).rich_color.downgrade(ColorSystem.EIGHT_BIT).number
            for k in STATES
        }
        assert len(downgraded) == len(STATES), mode
    mono = fmt.PALETTE["mono"]
    assert all(look.color is None for look in mono.values())
    assert mono["failed"].reverse and not mono["done"].dim and mono["queued"].dim


async def test_the_app_learns_its_colour_mode(seeded, monkeypatch):
    ws, clock = seeded
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("COLORTERM", raising=False)
    monkeypatch.setenv("TERM", "linux")
    app = make_app(ws, clock)
    async with app.run_test(size=(80, 24)):
        assert fmt.color_mode(app) == "16"
        app.theme = "ansi-dark"
        assert fmt.color_mode(app) == "ansi"
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(ws, clock)
    async with app.run_test(size=(80, 24)):
        assert fmt.color_mode(app) == "mono"


async def test_80_columns_keep_the_error_class_and_a_readable_id_and_resizing_refits(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        table = screen.episodes
        wide = [c.key for c in table.item_columns]
        assert {"verdict", "attempt", "error"} <= set(wide)
        await pilot.resize_terminal(80, 24)
        await wait_for(pilot, lambda: "verdict" not in [c.key for c in table.item_columns], what="refit")
        await pilot.pause(0.2)
        shown = [c.key for c in table.item_columns]
        assert shown[:3] == ["id", "status", "stage"] and "error" in shown
        assert sum(c.width + 2 for c in table.item_columns) + 3 <= 80
        assert row_text(table, EP[8], "error") == "missing_dependency"
        assert row_text(table, EP[4], "status") == "⚠ STALLED"  # the verdict column is gone: status says it
        for item_id in table.order:  # each shortened id keeps its show's start and its episode number
            shown_id = row_text(table, item_id, "id")
            number = re.search(r"ep\d+", item_id).group(0)
            assert shown_id.startswith(item_id[:9]) and number in shown_id, shown_id
        await pilot.resize_terminal(120, 40)
        await wait_for(pilot, lambda: "verdict" in [c.key for c in table.item_columns], what="refit back")
        await pilot.pause(0.2)
        assert row_text(table, EP[4], "verdict") == "⚠ STALLED"
        assert row_text(table, EP[4], "status") == "▶ running"


async def test_a_failed_item_shows_its_road_not_tries_left_and_no_stale_progress(seeded):
    ws, clock = seeded
    with ws.store.write() as conn:  # a failed empty file: the attempt had reported 93%
        conn.execute("UPDATE items SET progress=0.93 WHERE id=?", (EP[8],))
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        assert row_text(screen.episodes, EP[8], "status") == "✗ needs operator"
        assert row_text(screen.episodes, EP[8], "attempt") == ""
        assert row_text(screen.episodes, EP[8], "progress") == ""
        assert row_text(screen.episodes, EP[2], "progress") == "45%"  # running work keeps its progress
    assert fmt.status_label({"status": "failed", "attempts": 3}, 0, 3) == "failed 3/3"


async def test_the_legend_explains_the_marks_bars_and_rate(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: app.screen.__class__.__name__ == "HelpScreen", what="help")
        text = "\n".join(str(s.render()) for s in app.screen.query("Static"))
        for mark in ("✓", "▶", "↻", "‖", "■", "✗", "·", "⚠", "⊘", "◔", "☠", "▓▓▓", "×××", "n/min"):
            assert mark in text, mark
        assert "needs operator" in text and "STALLED" in text


async def test_the_first_run_hint_shows_once_and_any_key_dismisses_it(seeded, tmp_path, monkeypatch):
    ws, clock = seeded
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    app = make_app(ws, clock, first_run_hint=None)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        hint = screen.query_one("#first-run-hint")
        assert "? explains the marks" in str(hint.render())
        await pilot.press("j")
        await wait_for(pilot, lambda: not screen.query("#first-run-hint"), what="the hint to go")
        assert screen.episodes.cursor_row == 1  # the key still did its work
    from ewg_tui.widgets.first_run_hint import hint_path

    marker = hint_path()
    assert marker == tmp_path / "state" / "ewg" / "hint-seen"
    assert stat.S_IMODE(os.stat(marker).st_mode) == 0o600
    app = make_app(ws, clock, first_run_hint=None)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        assert not screen.query("#first-run-hint")


async def test_toasts_never_cover_a_third_of_an_80x24_screen(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await ready(pilot)
        long = "corrupt source: demo://Morning Brief/episode-007.mp4 has no readable video stream. " * 6
        for n in range(4):
            app.notify(f"{n}: {long}", title="Failed again", severity="error", timeout=30)
        await pilot.pause(0.3)
        toasts = list(app.screen.query("Toast"))
        assert toasts
        for toast in toasts:
            assert toast.outer_size.height <= 6 and toast.outer_size.width <= 40
        rack = app.screen.query_one("ToastRack")
        assert rack.outer_size.height <= 24 // 3
        covered = sum(rack.region.intersection(t.region).area for t in toasts)  # what is drawn
        assert covered <= 80 * 24 // 3
