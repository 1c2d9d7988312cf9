"""Audit log and recovery metrics (`l`): who did what, when, to what, with which result; how well recovery
works and what it costs (ARCHITECTURE.md contract 3: the attempts rows are the record)."""

from __future__ import annotations

import time

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Label, Static

from engine.db import queries
from engine.text import one_line

from ..widgets import formatting as fmt
from ..widgets.footer import Footer

EVENTS_SHOWN = 500
REFRESH_SECONDS = 2.0
COST_REFRESH_SECONDS = 30.0


class AuditRead(Message):
    def __init__(self, events: list[dict], metrics: dict, cost: dict | None = None) -> None:
        super().__init__()
        self.events = events
        self.metrics = metrics
        self.cost = cost  # engine.db.queries.recovery_cost over all history kept


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def cost_content(cost: dict) -> Content:
    """The "Cost of recovery" line: runs and time spent on failures, retries, rescues, and paused time."""
    t, p = cost["totals"], cost["paused"]
    parts = [
        f"{t['failed_runs']} failed runs {fmt.duration(t['failed_seconds'])}",
        f"{t['retries']} retries {fmt.duration(t['retry_seconds'])}",
        f"{t['rescues']} rescues {fmt.duration(t['rescue_seconds'])}",
    ]
    if t["wasted_share"] is not None:
        parts.append(f"{_rate(t['wasted_share'])} of stage time wasted")
    if p["seconds"]:
        lost = "" if p["runs_lost"] is None else f" (~{p['runs_lost']:.0f} runs lost)"
        parts.append(f"paused {fmt.duration(p['seconds'])}{lost}")
    worst = cost["by_error_class"][:1]
    if worst:
        w = worst[0]
        parts.append(
            f"worst: {w['kind']} {w['stage']} {w['error_class']} ×{w['runs']} {fmt.duration(w['seconds'])}"
        )
    return Content.assemble(("Cost of recovery ", "bold $accent"), "  ·  ".join(parts))


def metrics_content(m: dict, cost: dict | None = None) -> Content:
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
                one_line(
                    "  ".join(f"{p['kind']} {p['stage']} {p['error_class']} ×{p['count']}" for p in points)
                ),
            )
        )
    if m["action_effectiveness"]:
        parts = [
            f"{a['verb']}: {a['succeeded']} ok, {a['failed_again']} failed again, {a['pending']} pending"
            for a in m["action_effectiveness"]
        ]
        lines.append(
            Content.assemble(("Action effectiveness ", "bold $accent"), one_line("  ·  ".join(parts)))
        )
    else:
        lines.append(
            Content.assemble(
                ("Action effectiveness ", "bold $accent"), ("no recovery verbs used yet", "$foreground-muted")
            )
        )
    if cost is not None:
        lines.append(cost_content(cost))
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
        self._cost: dict | None = None  # read by the load worker only (exclusive)
        self._cost_event = -1
        self._cost_read = 0.0

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
        events = queries.events(store, limit=EVENTS_SHOWN)
        newest = events[0]["id"] if events else 0
        # The cost reads every attempt (a second at 100k items): again only when an event came (a
        # pause, a verb, a failed attempt) or the last one is COST_REFRESH_SECONDS old.
        if newest != self._cost_event or time.monotonic() - self._cost_read > COST_REFRESH_SECONDS:
            self._cost = queries.recovery_cost(store, None, self.app.clock.now())  # type: ignore[attr-defined]
            self._cost_event, self._cost_read = newest, time.monotonic()
        self.post_message(AuditRead(events, queries.metrics(store), self._cost))

    def on_audit_read(self, message: AuditRead) -> None:
        newest = message.events[0]["id"] if message.events else 0
        shown = metrics_content(message.metrics, message.cost)
        signature = (newest, len(message.events), shown.plain)
        if signature != self._shown:
            self._shown = signature
            self.query_one("#audit-metrics", Static).update(shown)
            table = self.query_one(DataTable)
            known = {key.value for key in table.rows}
            for event in reversed(message.events):  # oldest first, so new events land on top
                key = str(event["id"])
                if key in known:
                    continue
                table.add_row(
                    key,
                    fmt.clock_time(event["at"]),
                    Text(one_line(event["actor"])),
                    Text(one_line(event["verb"])),
                    Text(one_line(event["selection"])),
                    Text(one_line(event["reason"])),
                    Text(one_line(event["result"])),
                    key=key,
                )
            table.sort("#", key=int, reverse=True)  # newest first
        self.set_timer(REFRESH_SECONDS, self.load)

    def action_back(self) -> None:
        self.dismiss(None)
