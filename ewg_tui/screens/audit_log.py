"""Audit log and recovery metrics (`l`): who did what, when, to what, with which result; how well recovery works."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Label, Static

from engine import queries

from ..widgets import formatting as fmt
from ..widgets.footer import Footer

EVENTS_SHOWN = 500
REFRESH_SECONDS = 2.0


class AuditRead(Message):
    def __init__(self, events: list[dict], metrics: dict) -> None:
        super().__init__()
        self.events = events
        self.metrics = metrics


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def metrics_content(m: dict) -> Content:
    ttr = m["time_to_recovery_s"]
    lines = [
        Content.assemble(
            ("Recovery ", "bold $accent"),
            f"{m['recovered']} of {m['failures']} failed stage runs recovered ",
            (f"({_rate(m['recovery_success_rate'])})", "bold"),
            "   time to recovery: median ",
            fmt.duration(ttr["median"]) or "n/a",
            ", max ",
            fmt.duration(ttr["max"]) or "n/a",
        )
    ]
    points = m["top_failure_points"][:3]
    if points:
        lines.append(
            Content.assemble(
                ("Top failure points ", "bold $accent"),
                "  ".join(f"{p['kind']} {p['stage']} {p['error_class']} ×{p['count']}" for p in points),
            )
        )
    if m["action_effectiveness"]:
        parts = [
            f"{a['verb']}: {a['succeeded']} ok, {a['failed_again']} failed again, {a['pending']} pending"
            for a in m["action_effectiveness"]
        ]
        lines.append(Content.assemble(("Action effectiveness ", "bold $accent"), "  ·  ".join(parts)))
    else:
        lines.append(
            Content.assemble(
                ("Action effectiveness ", "bold $accent"), ("no recovery verbs used yet", "$foreground-muted")
            )
        )
    return Content("\n").join(lines)


class AuditLogScreen(Screen[None]):
    DEFAULT_CSS = """
    AuditLogScreen #audit-head {
        width: 1fr;
        background: $panel;
        padding: 0 1;
        text-style: bold;
    }
    AuditLogScreen #audit-metrics {
        height: auto;
        padding: 0 1;
        border-bottom: hkey $panel;
    }
    AuditLogScreen DataTable {
        height: 1fr;
    }
    """
    BINDINGS = [Binding("escape,q,l", "back", "Back", id="audit.back")]

    def __init__(self) -> None:
        super().__init__()
        self._shown: tuple | None = None

    def compose(self) -> ComposeResult:
        yield Label("Audit log and recovery metrics", id="audit-head")
        yield Static(id="audit-metrics")
        yield DataTable(id="audit-events", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label in ("#", "when (UTC)", "who", "verb", "selection", "reason", "result"):
            table.add_column(label, key=label)
        table.focus()
        self.load()

    @work(thread=True, exclusive=True, group="audit", exit_on_error=False)
    def load(self) -> None:
        store = self.app.ws.store  # type: ignore[attr-defined]
        self.post_message(AuditRead(queries.events(store, limit=EVENTS_SHOWN), queries.metrics(store)))

    def on_audit_read(self, message: AuditRead) -> None:
        newest = message.events[0]["id"] if message.events else 0
        signature = (newest, len(message.events), repr(message.metrics))
        if signature != self._shown:
            self._shown = signature
            self.query_one("#audit-metrics", Static).update(metrics_content(message.metrics))
            table = self.query_one(DataTable)
            known = {key.value for key in table.rows}
            for event in reversed(message.events):  # oldest first, so new events land on top
                key = str(event["id"])
                if key in known:
                    continue
                table.add_row(
                    key,
                    fmt.clock_time(event["at"]),
                    Text(event["actor"]),
                    event["verb"],
                    Text(event["selection"] or ""),
                    Text(event["reason"] or ""),
                    Text(event["result"] or ""),
                    key=key,
                )
            table.sort("#", key=int, reverse=True)  # newest first
        self.set_timer(REFRESH_SECONDS, self.load)

    def action_back(self) -> None:
        self.dismiss(None)
