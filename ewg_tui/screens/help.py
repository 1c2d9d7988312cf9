"""`?`: every key, grouped, with the verbs that do not apply to the selection greyed out, then the legend:
what each mark, bar segment and header number means, drawn in this terminal's own colours."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from ..keys import DEFAULT_KEYS, ActiveKeys, keys_of
from ..widgets import formatting as fmt
from ..widgets.stage_progress import BAR_GLYPHS


@dataclass(frozen=True)
class HelpEntry:
    group: str
    key: str
    description: str
    enabled: bool = True
    style: str = ""  # the key cell's style (a legend mark is drawn as the table draws it)
    binding_id: str = ""  # shown beside the description: what `[console.keymap]` calls it


def legend_entries(looks, keys: ActiveKeys = DEFAULT_KEYS) -> list[HelpEntry]:
    """The legend: every status and verdict mark, the stage bar segments and the header's numbers.
    `looks(key)` is the app's palette look, so the legend shows what the table shows; `keys` the active
    keys the legend names."""
    entries = [
        HelpEntry("Status", fmt.glyph(key), keys.fill(fmt.MEANING[key]), style=looks(key).markup)
        for key in ("done", "running", "retrying", "blocked", "stopped", "failed", "queued")
    ]
    entries += [
        HelpEntry("Verdicts", fmt.glyph(key), keys.fill(fmt.MEANING[key]), style=looks(key).markup)
        for key in fmt.VERDICTS
    ]
    bars = (
        ("done", "done", "finished this stage"),
        ("in_flight", "running", "in flight at this stage"),
        ("failed", "failed", "failed at this stage"),
    )
    entries += [
        HelpEntry("Stage bars", BAR_GLYPHS[segment] * 3, f"{what}", style=looks(key).markup)
        for segment, key, what in bars
    ]
    entries += [
        HelpEntry("Stage bars", BAR_GLYPHS["waiting"] * 3, "not there yet"),
        HelpEntry("Stage bars", "3✓ 1▶ 2✗", "the counts: done, in flight, failed"),
        HelpEntry("Header", "n/min", "stage executions finished in the last minute (all engines)"),
        HelpEntry("Header", "workers", "busy / started worker threads"),
        HelpEntry(
            "Header",
            "⚠ stuck",
            keys.fill("running items the watchdog flagged; {key:main.filter} stuck filters them"),
        ),
        HelpEntry("Columns", "try", "attempts spent on this stage / allowed"),
        HelpEntry("Columns", "%", "progress of the running attempt (empty after a failure)"),
    ]
    return entries


ID_COLUMN_FROM = 110  # terminal columns from which binding ids get a column of their own


def help_rows(entries: list[HelpEntry], id_column: bool = False) -> list[Static]:
    """Group headings, then a key cell and a description cell per entry (the grid keeps the indent), and
    the binding id: in a third cell with `id_column`, else on its own line under the description."""
    cells: list[Static] = []
    width = 3 if id_column else 2
    group = None
    for entry in entries:
        if entry.group != group:
            if group is not None:
                cells += [Static("") for _ in range(width)]  # a blank grid row between groups
            cells.append(Static(Content.assemble((entry.group, "bold $accent"))))
            cells += [Static("") for _ in range(width - 1)]
            group = entry.group
        muted = "" if entry.enabled else "$foreground-disabled"
        key_style = entry.style or f"bold {muted}".strip()
        cells.append(Static(Content.assemble((entry.key, key_style)), classes="help-key"))
        description = entry.description if entry.enabled else f"{entry.description}  (not for this selection)"
        shown_id = (entry.binding_id, muted or "$foreground-muted") if entry.binding_id else ""
        if id_column:
            cells.append(Static(Content.assemble((description, muted)), classes="help-text"))
            cells.append(Static(Content.assemble(shown_id), classes="help-id"))
        else:
            below = ("\n", shown_id) if entry.binding_id else ()
            cells.append(Static(Content.assemble((description, muted), *below), classes="help-text"))
    return cells


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > Vertical {
        width: 90%;
        max-width: 100;
        height: 90%;
        border: thick $accent 60%;
        background: $surface;
        padding: 0 1;
    }
    HelpScreen Label {
        text-style: bold;
        width: 1fr;
    }
    HelpScreen VerticalScroll {
        height: 1fr;
    }
    HelpScreen Grid {
        grid-size: 2;
        grid-columns: 11 1fr;
        grid-rows: auto;
        height: auto;
    }
    HelpScreen Grid.-ids {
        grid-size: 3;
        grid-columns: 11 1fr 28;
        height: auto;
    }
    HelpScreen .help-id {
        padding-left: 2;
    }
    HelpScreen .help-note {
        margin-top: 1;
        color: $text-muted;
    }
    """
    BINDINGS = [
        Binding("escape,question_mark,q", "close", "Close", id="help.close"),
        Binding("j", "scroll(1)", "Down", show=False, id="help.down"),
        Binding("k", "scroll(-1)", "Up", show=False, id="help.up"),
    ]
    AUTO_FOCUS = "VerticalScroll"

    def __init__(self, entries: list[HelpEntry], note: str = "") -> None:
        super().__init__()
        self.entries = entries
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(
                keys_of(self).fill(
                    "Keys   (dimmed: not for the selection · grey: its id in [console.keymap])   "
                    "{key:help.close} closes"
                ),
                markup=False,
            )
            with VerticalScroll():
                id_column = self.app.size.width >= ID_COLUMN_FROM
                with Grid(classes="-ids" if id_column else ""):
                    yield from help_rows(self.entries, id_column)
                if self.note:
                    yield Static(self.note, classes="help-note", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_scroll(self, lines: int) -> None:
        self.query_one(VerticalScroll).scroll_relative(y=lines, animate=False)
