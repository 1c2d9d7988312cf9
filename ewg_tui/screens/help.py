"""`?`: every key, grouped, with the verbs that do not apply to the selection greyed out."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Label, Static


@dataclass(frozen=True)
class HelpEntry:
    group: str
    key: str
    description: str
    enabled: bool = True


def key_label(key: str) -> str:
    first = key.split(",")[0]
    names = {
        "question_mark": "?",
        "slash": "/",
        "colon": ":",
        "space": "space",
        "escape": "esc",
        "enter": "enter",
        "tab": "tab",
    }
    return names.get(first, first)


def help_rows(entries: list[HelpEntry]) -> list[Static]:
    """Group headings, then one key cell and one description cell per entry (the grid keeps the indent)."""
    cells: list[Static] = []
    group = None
    for entry in entries:
        if entry.group != group:
            if group is not None:
                cells += [Static(""), Static("")]  # a blank grid row between groups
            cells.append(Static(Content.assemble((entry.group, "bold $accent"))))
            cells.append(Static(""))
            group = entry.group
        muted = "" if entry.enabled else "$foreground-disabled"
        cells.append(Static(Content.assemble((entry.key, f"bold {muted}".strip())), classes="help-key"))
        description = entry.description if entry.enabled else f"{entry.description}  (not for this selection)"
        cells.append(Static(Content.assemble((description, muted)), classes="help-text"))
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
            yield Label("Keys   (dimmed: does not apply to the selection)   esc closes")
            with VerticalScroll():
                with Grid():
                    yield from help_rows(self.entries)
                if self.note:
                    yield Static(self.note, classes="help-note", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_scroll(self, lines: int) -> None:
        self.query_one(VerticalScroll).scroll_relative(y=lines, animate=False)
