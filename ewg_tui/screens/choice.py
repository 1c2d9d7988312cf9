"""Pick one of a few values (the stage to reprocess from or roll back to, how long to extend)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from engine.text import one_line


class ChoiceScreen(ModalScreen[object]):
    """Dismisses with the chosen value, or None when the operator backs out."""

    DEFAULT_CSS = """
    ChoiceScreen {
        align: center middle;
    }
    ChoiceScreen > Vertical {
        width: 90%;
        max-width: 80;
        height: auto;
        border: thick $accent 60%;
        background: $surface;
        padding: 0 1;
    }
    ChoiceScreen Label {
        width: 1fr;
        text-style: bold;
        margin-bottom: 1;
    }
    ChoiceScreen OptionList {
        height: auto;
        max-height: 12;
        border: none;
    }
    """
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="choice.cancel"),
        Binding("j", "move(1)", "Down", show=False, id="choice.down"),  # like every list in ewg
        Binding("k", "move(-1)", "Up", show=False, id="choice.up"),
    ]

    def __init__(self, title: str, choices: list[tuple[object, str]]) -> None:
        super().__init__()
        self.title_text = title
        self.choices = choices

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(one_line(self.title_text), markup=False)
            yield OptionList(
                *(
                    Option(Content(one_line(label)), id=str(n))
                    for n, (_value, label) in enumerate(self.choices)
                )
            )

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(self.choices[int(event.option.id or 0)][0])

    def action_move(self, step: int) -> None:
        options = self.query_one(OptionList)
        if step > 0:
            options.action_cursor_down()
        else:
            options.action_cursor_up()

    def action_cancel(self) -> None:
        self.dismiss(None)
