"""Failure groups: one row per fingerprint (stage + error class + normalised message), largest first.

Picking a group (enter) hands its fingerprint back; the main screen then shows the
engine's preview of retrying the whole group and asks before doing it.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from engine.db import queries
from engine.text import one_line

from ..keys import keys_of
from ..widgets import formatting as fmt


class GroupsRead(Message):
    def __init__(self, groups: list[dict]) -> None:
        super().__init__()
        self.groups = groups


class FailureGroupsScreen(ModalScreen[str | None]):
    DEFAULT_CSS = """
    FailureGroupsScreen {
        align: center middle;
    }
    FailureGroupsScreen > Vertical {
        width: 95%;
        height: 80%;
        border: thick $error 60%;
        background: $surface;
        padding: 0 1;
    }
    FailureGroupsScreen Label {
        text-style: bold;
        width: 1fr;
    }
    FailureGroupsScreen DataTable {
        height: 1fr;
        scrollbar-size-horizontal: 0;
    }
    FailureGroupsScreen #group-message {
        height: auto;
        max-height: 4;
        color: $text-muted;
    }
    """
    BINDINGS = [
        Binding("escape,q", "close", "Close", id="groups.close"),
        Binding("j", "cursor(1)", "Down", show=False, id="groups.down"),
        Binding("k", "cursor(-1)", "Up", show=False, id="groups.up"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[dict] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(
                "Failure groups · enter retries a whole group (preview first) · "
                + keys_of(self).label("groups.close"),
                markup=False,
            )
            yield DataTable(id="groups", cursor_type="row")
            yield Static("", id="group-message", markup=False)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label, key in (
            ("items", "count"),
            ("kind", "kind"),
            ("stage", "stage"),
            ("class", "class"),
            ("first seen", "first"),
            ("last seen", "last"),
            ("message", "message"),
        ):
            table.add_column(label, key=key)
        table.focus()
        self.load()

    @work(thread=True, exclusive=True, group="groups", exit_on_error=False)
    def load(self) -> None:
        self.post_message(GroupsRead(queries.failure_groups(self.app.ws.store)))  # type: ignore[attr-defined]

    def on_groups_read(self, message: GroupsRead) -> None:
        self.groups = message.groups
        table = self.query_one(DataTable)
        for group in self.groups:
            table.add_row(
                Text(str(group["count"]), justify="right"),
                fmt.plain(group["kind"]),
                fmt.plain(group["stage"]),
                fmt.plain(group["error_class"]),
                fmt.clock_time(group["first_seen"]),
                fmt.clock_time(group["last_seen"]),
                Text(fmt.middle_ellipsis(one_line(group["message"]), 60, tail=20)),
                key=group["fingerprint"],
            )
        if not self.groups:
            self.query_one("#group-message", Static).update("No failed items: nothing to group.")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        group = next((g for g in self.groups if g["fingerprint"] == event.row_key.value), None)
        if group:
            ids = one_line(", ".join(group["ids"][:5])) + (
                f" and {group['count'] - 5} more" if group["count"] > 5 else ""
            )
            self.query_one("#group-message", Static).update(
                f"{one_line(group['message'])}\n{ids}\n{one_line(keys_of(self).with_keys(group['suggestion']))}"
            )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.dismiss(event.row_key.value)

    def action_cursor(self, step: int) -> None:
        table = self.query_one(DataTable)
        table.move_cursor(row=table.cursor_row + step)

    def action_close(self) -> None:
        self.dismiss(None)
