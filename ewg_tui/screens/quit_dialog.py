"""Quitting while work is in flight: stop gracefully, or leave it to a headless engine."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

STOP, LEAVE = "stop", "leave"


class QuitScreen(ModalScreen[str | None]):
    DEFAULT_CSS = """
    QuitScreen {
        align: center middle;
    }
    QuitScreen > Vertical {
        width: 70;
        max-width: 95%;
        height: auto;
        border: thick $warning 60%;
        background: $surface;
        padding: 0 1;
    }
    QuitScreen Horizontal {
        height: auto;
        margin-top: 1;
    }
    QuitScreen Button {
        margin-right: 1;
    }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="quit.cancel")]
    AUTO_FOCUS = "#stop"

    def __init__(self, busy: int) -> None:
        super().__init__()
        self.busy = busy

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                f"{self.busy} item(s) are being processed by this console's engine.\n\n"
                "Stop gracefully: each stage stops at a safe point and its item is released; it "
                "resumes on the next start.\n"
                "Leave running: quit at once; a headless engine (`ewg run --headless`) on this host "
                "rescues the work immediately.",
                markup=False,
            )
            with Horizontal():
                yield Button("Stop gracefully", id="stop", variant="primary")
                yield Button("Leave running", id="leave", variant="warning")
                yield Button("Cancel", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None if event.button.id == "cancel" else event.button.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
