"""Confirmation of a destructive verb: the engine's preview, an optional reason, and **No** focused."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from engine.text import one_line
from engine.verbs import Preview, VerbError, check_reason

from ..widgets.formatting import keep_inert

MAX_LISTED = 200


def preview_lines(preview: Preview) -> Content:
    lines: list[Content] = []
    for change in preview.changes[:MAX_LISTED]:
        before = one_line(f"{change.before.get('stage') or '-'}/{change.before.get('status')}")
        after = one_line(f"{change.after.get('stage') or '-'}/{change.after.get('status')}")
        parts: list = [(one_line(change.item_id), "bold"), "  ", (before, "$foreground-muted"), " → ", after]
        if change.stages_rerun:
            parts += ["  reruns ", (one_line(", ".join(change.stages_rerun)), "$warning")]
        if change.cache_dropped:
            parts += ["  ", ("cache dropped", "$warning")]
        if change.files_deleted:
            parts += ["  ", ("files deleted", "bold $error")]
        if change.interrupts_run:
            parts += ["  ", ("interrupts the running attempt", "bold $error")]
        if change.note:
            parts += ["  ", (change.note, "$warning")]
        lines.append(Content.assemble(*parts))
    if len(preview.changes) > MAX_LISTED:
        lines.append(
            Content.assemble((f"… and {len(preview.changes) - MAX_LISTED} more", "$foreground-muted"))
        )
    for note in preview.notes[:20]:
        lines.append(Content.assemble(("• ", "$accent"), one_line(note)))
    if preview.skipped:
        lines.append(Content.assemble((f"not applicable ({len(preview.skipped)})", "bold $foreground-muted")))
        for item_id, why in preview.skipped[:20]:
            lines.append(Content.assemble((one_line(f"  {item_id} {why}"), "$foreground-muted")))
    return Content("\n").join(lines)


class ConfirmVerbScreen(ModalScreen[str | None]):
    """Dismisses with the reason ("" for none) when confirmed, None when not."""

    DEFAULT_CSS = """
    ConfirmVerbScreen {
        align: center middle;
    }
    ConfirmVerbScreen > Vertical {
        width: 90%;
        max-width: 110;
        height: auto;
        max-height: 90%;
        border: thick $error 60%;
        background: $surface;
        padding: 0 1;
    }
    ConfirmVerbScreen #confirm-title {
        text-style: bold;
        width: 1fr;
    }
    ConfirmVerbScreen #confirm-preview {
        height: auto;
        max-height: 14;
        margin: 1 0 0 0;
    }
    ConfirmVerbScreen Input {
        margin: 1 0 0 0;
    }
    ConfirmVerbScreen #reason-problem {
        color: $error;
        display: none;
    }
    ConfirmVerbScreen Horizontal {
        height: auto;
        align-horizontal: right;
    }
    ConfirmVerbScreen Button {
        margin: 0 0 0 2;
        min-width: 10;
    }
    """
    BINDINGS = [Binding("escape", "no", "No", id="confirm.no")]
    AUTO_FOCUS = "#no"

    def __init__(self, title: str, preview: Preview) -> None:
        super().__init__()
        self.title_text = title
        self.preview = preview

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(one_line(self.title_text), id="confirm-title", markup=False)
            yield Static(
                Content.assemble((one_line(self.preview.summary()), "$warning")), id="confirm-summary"
            )
            with VerticalScroll(id="confirm-preview"):
                yield Static(preview_lines(self.preview))
            yield Input(placeholder="reason for the audit log (optional)", id="reason")
            yield Static("", id="reason-problem", markup=False)
            with Horizontal():
                yield Button("No", id="no", variant="primary")
                yield Button("Yes, do it", id="yes", variant="error")

    def on_mount(self) -> None:
        self.query_one("#reason", Input).cursor_blink = getattr(self.app, "cursor_blink", True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "yes":
            reason = self.query_one("#reason", Input).value.strip()
            try:
                check_reason(reason)
            except VerbError as exc:  # said here, with the reason still there to shorten
                problem = self.query_one("#reason-problem", Static)
                problem.update(str(exc))
                problem.display = True
                self.query_one("#reason", Input).focus()
                return
            self.dismiss(reason)
        else:
            self.dismiss(None)

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        keep_inert(event.input, event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one("#yes", Button).focus()

    def action_no(self) -> None:
        self.dismiss(None)
