"""`?`: every key, grouped, with the verbs that do not apply to the selection greyed out."""
from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
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
    names = {"question_mark": "?", "slash": "/", "colon": ":", "space": "space", "escape": "esc", "enter": "enter",
             "tab": "tab"}
    return names.get(first, first)


def help_content(entries: list[HelpEntry], note: str = "") -> Content:
    lines: list[Content] = []
    group = None
    for entry in entries:
        if entry.group != group:
            if group is not None:
                lines.append(Content(""))
            lines.append(Content.assemble((entry.group, "bold $accent")))
            group = entry.group
        style = "" if entry.enabled else "$text-disabled"
        lines.append(Content.assemble((f"  {entry.key:<8}", "bold" if entry.enabled else "$text-disabled"),
                                      (entry.description, style)))
    if note:
        lines += [Content(""), Content.assemble((note, "$text-muted"))]
    return Content("\n").join(lines)


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
            yield Label("Keys  (greyed: does not apply to the selection)   esc closes")
            with VerticalScroll():
                yield Static(help_content(self.entries, self.note))

    def action_close(self) -> None:
        self.dismiss(None)

    def action_scroll(self, lines: int) -> None:
        self.query_one(VerticalScroll).scroll_relative(y=lines, animate=False)
