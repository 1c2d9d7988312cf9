"""Snapshots of the console's screens and modals at 80x24 and 120x40.

Plain `def` tests (snap_compare runs the app itself), a fixed clock, seeded data,
a fixed workspace path and no cursor blink. Review a changed snapshot by looking
at it (`pytest --snapshot-update`, then open the SVG), never by regenerating blindly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tui"))

from console_fixtures import EP, fixed_root, seeded_workspace  # noqa: E402
from pilot_helpers import make_app, move_to, ready, wait_for  # noqa: E402

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


@pytest.fixture(autouse=True)
def _terminal(monkeypatch):
    """The status palette follows the terminal (TERM, COLORTERM, NO_COLOR): every snapshot is taken as a
    256-colour terminal unless its test says otherwise, whatever the shell running the tests has."""
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("COLORTERM", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)


def console(name: str, **kw):
    ws, clock = seeded_workspace(fixed_root(name))
    return make_app(ws, clock, poll_interval=60.0, **kw)


async def settled(pilot):
    screen = await ready(pilot)
    for toast in list(pilot.app._notifications):  # the "stuck work" toast has its own snapshot test
        pilot.app._unnotify(toast)
    await pilot.pause(0.1)
    return screen


@pytest.mark.parametrize("size", SIZES)
def test_main_screen(snap_compare, size):
    async def run_before(pilot):
        screen = await settled(pilot)
        await move_to(pilot, screen.episodes, EP[3])  # a waiting retry with its history

    assert snap_compare(console(f"main-{size[0]}"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_main_screen_with_clips_and_stuck_notice(snap_compare, size):
    async def run_before(pilot):
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[1])
        await pilot.press("tab")
        await wait_for(pilot, lambda: screen.clips.total == 3, what="clips")
        await move_to(pilot, screen.clips, f"{EP[1]}__c02")

    assert snap_compare(console(f"clips-{size[0]}"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_help(snap_compare, size):
    async def run_before(pilot):
        screen = await settled(pilot)
        await move_to(pilot, screen.episodes, EP[7])
        await pilot.press("question_mark")

    assert snap_compare(console(f"help-{size[0]}"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_confirmation(snap_compare, size):
    async def run_before(pilot):
        screen = await settled(pilot)
        await move_to(pilot, screen.episodes, EP[8])
        await pilot.press("R")
        await wait_for(pilot, lambda: pilot.app.screen.__class__.__name__ == "ChoiceScreen", what="choice")
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: pilot.app.screen.__class__.__name__ == "ConfirmVerbScreen", what="confirm"
        )
        await pilot.pause(0.1)

    assert snap_compare(console(f"confirm-{size[0]}"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_stage_choice(snap_compare, size):
    async def run_before(pilot):
        screen = await settled(pilot)
        await move_to(pilot, screen.episodes, EP[10])
        await pilot.press("R")
        await wait_for(pilot, lambda: pilot.app.screen.__class__.__name__ == "ChoiceScreen", what="choice")

    assert snap_compare(console(f"choice-{size[0]}"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_filter(snap_compare, size):
    async def run_before(pilot):
        screen = await settled(pilot)
        await pilot.press("slash", *"status:failed,retrying")
        await wait_for(pilot, lambda: screen.episodes.total == 3, what="the filter")

    assert snap_compare(console(f"filter-{size[0]}"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_item_detail(snap_compare, size):
    async def run_before(pilot):
        screen = await settled(pilot)
        await move_to(pilot, screen.episodes, EP[1])
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: (
                pilot.app.screen.__class__.__name__ == "ItemDetailScreen"
                and pilot.app.screen.query_one("#detail-checkpoints").row_count == 5
            ),
            what="detail",
        )

    assert snap_compare(console(f"detail-{size[0]}"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_readonly_main_screen(snap_compare, size):
    async def run_before(pilot):
        await settled(pilot)

    assert snap_compare(
        console(f"readonly-{size[0]}", readonly=True), terminal_size=size, run_before=run_before
    )


@pytest.mark.parametrize("theme", ["ansi-dark", "textual-light"])
def test_main_screen_in_other_themes(snap_compare, theme):
    """Operators' terminals vary: the ansi theme uses their own 16-colour palette; light terminals exist."""

    async def run_before(pilot):
        pilot.app.theme = theme
        screen = await settled(pilot)
        await move_to(pilot, screen.episodes, EP[7])

    assert snap_compare(console(f"theme-{theme}"), terminal_size=(80, 24), run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_failure_groups(snap_compare, size):
    async def run_before(pilot):
        await settled(pilot)
        await pilot.press("f")
        await wait_for(pilot, lambda: getattr(pilot.app.screen, "groups", None), what="groups")
        await pilot.pause(0.1)

    assert snap_compare(console(f"groups-{size[0]}"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_stuck_intervention(snap_compare, size):
    async def run_before(pilot):
        screen = await settled(pilot)
        await move_to(pilot, screen.episodes, EP[4])
        await pilot.press("i")
        await wait_for(
            pilot, lambda: pilot.app.screen.__class__.__name__ == "ChoiceScreen", what="intervention"
        )

    assert snap_compare(console(f"intervene-{size[0]}"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_audit_log(snap_compare, size):
    async def run_before(pilot):
        from engine.verbs import Operator

        ws = pilot.app.ws
        Operator(ws, actor="alice").retry([EP[7]], reason="source replaced")
        Operator(ws, actor="bob").stop([EP[10]], reason="maintenance window")
        await settled(pilot)
        await pilot.press("l")
        await wait_for(
            pilot,
            lambda: (
                pilot.app.screen.__class__.__name__ == "AuditLogScreen"
                and pilot.app.screen.query_one("DataTable").row_count == 2
            ),
            what="audit log",
        )

    assert snap_compare(console(f"audit-{size[0]}"), terminal_size=size, run_before=run_before)


COLOUR_MODES = ["default", "ansi-dark", "16-colours", "no-color"]


@pytest.mark.parametrize("mode", COLOUR_MODES)
def test_every_status_in_each_colour_mode(snap_compare, monkeypatch, mode):
    """Every status and verdict (done, running, retry, STALLED, blocked, stopped, failed, queued) told apart
    by glyph and look: truecolor, an ansi theme, a 16-colour terminal (TERM=linux: the palette uses the
    16 standard colours' exact RGB) and NO_COLOR (bold and reverse rank failed and STALLED above healthy
    rows). At 100 columns: narrow layout, the error and verdict columns kept, the try column left out."""
    if mode == "16-colours":
        monkeypatch.setenv("TERM", "linux")
    if mode == "no-color":
        monkeypatch.setenv("NO_COLOR", "1")
    app = console(f"modes-{mode}")

    async def run_before(pilot):
        if mode == "ansi-dark":
            pilot.app.theme = "ansi-dark"
        screen = await settled(pilot)
        await move_to(pilot, screen.episodes, EP[8])  # a failed row under the cursor: detail pane too

    assert snap_compare(app, terminal_size=(100, 32), run_before=run_before)


def test_legend(snap_compare):
    async def run_before(pilot):
        await settled(pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: pilot.app.screen.__class__.__name__ == "HelpScreen", what="help")
        help_screen = pilot.app.screen
        heading = next(s for s in help_screen.query("Static") if str(s.render()) == "Status")
        help_screen.query_one("VerticalScroll").scroll_to_widget(heading, top=True, animate=False)
        await pilot.pause(0.1)

    assert snap_compare(console("legend"), terminal_size=(120, 40), run_before=run_before)


def test_first_run_hint(snap_compare, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    async def run_before(pilot):
        await settled(pilot)

    assert snap_compare(console("hint", first_run_hint=None), terminal_size=(80, 24), run_before=run_before)


def test_main_screen_with_a_keymap(snap_compare):
    """`[console.keymap]` moved retry to t and help to f1: the footer and the error pane's suggestion and
    keys line name t, not r."""
    ws, clock = seeded_workspace(fixed_root("keymap"))
    ws.config.console.keymap = {"verb.retry": "t", "main.time_view": "T", "main.help": "f1"}
    app = make_app(ws, clock, poll_interval=60.0)

    async def run_before(pilot):
        screen = await settled(pilot)
        await move_to(pilot, screen.episodes, EP[8])  # missing dependency: "then retry (t)"

    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)


def test_item_detail_in_a_theme_from_ewg_toml(snap_compare):
    """`[console] theme = "nord"`: the console starts in it; the detail's footer shows copy and pager."""
    ws, clock = seeded_workspace(fixed_root("theme-nord"))
    ws.config.console.theme = "nord"
    app = make_app(ws, clock, poll_interval=60.0)

    async def run_before(pilot):
        screen = await settled(pilot)
        await move_to(pilot, screen.episodes, EP[7])
        await pilot.press("enter")
        await pilot.pause(0.5)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
