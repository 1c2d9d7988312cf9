"""Time view (`t`): throughput, failures, retries and rescues per minute over the last hour, as charts.

Trends are seen, not read: a sparkline per series, with its current minute, peak and total
beside it. The read is one grouped query over the attempts of the hour, on a worker thread,
every few seconds.
"""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Label, Sparkline, Static

from engine.db import queries

from ..widgets import formatting as fmt
from ..widgets.footer import Footer

MINUTES = 60
REFRESH_SECONDS = 5.0

SERIES = (  # attribute of queries.PerMinute, title, meaning (colours: the CSS below)
    ("completed", "Throughput", "stage runs completed"),
    ("failed", "Failures", "stage runs failed"),
    ("retries", "Retries", "stage runs that were a retry"),
    ("rescued", "Rescues", "runs rescued from an engine that died"),
)


class TimeRead(Message):
    def __init__(self, data: queries.PerMinute) -> None:
        super().__init__()
        self.data = data


def summary(title: str, meaning: str, values: list[int]) -> Content:
    return Content.assemble(
        (f"{title} ", "bold $accent"),
        (f"{meaning} per minute", "$foreground-muted"),
        "   now ",
        (str(values[-1] if values else 0), "bold"),
        "  peak ",
        (str(max(values, default=0)), "bold"),
        "  last hour ",
        (str(sum(values)), "bold"),
    )


class TimeViewScreen(Screen[None]):
    DEFAULT_CSS = """
    TimeViewScreen #time-head {
        width: 1fr;
        background: $panel;
        padding: 0 1;
        text-style: bold;
    }
    TimeViewScreen .series {
        height: auto;
        padding: 0 1;
        margin-bottom: 1;
    }
    TimeViewScreen Sparkline {
        height: 3;
        margin: 0 0;
    }
    TimeViewScreen #completed-chart > .sparkline--max-color { color: $success; }
    TimeViewScreen #completed-chart > .sparkline--min-color { color: $success 40%; }
    TimeViewScreen #failed-chart > .sparkline--max-color { color: $error; }
    TimeViewScreen #failed-chart > .sparkline--min-color { color: $error 40%; }
    TimeViewScreen #retries-chart > .sparkline--max-color { color: $warning; }
    TimeViewScreen #retries-chart > .sparkline--min-color { color: $warning 40%; }
    TimeViewScreen #rescued-chart > .sparkline--max-color { color: $secondary; }
    TimeViewScreen #rescued-chart > .sparkline--min-color { color: $secondary 40%; }
    TimeViewScreen #time-axis {
        color: $foreground-muted;
        padding: 0 1;
    }
    """
    BINDINGS = [Binding("escape,q,t", "back", "Back", id="time.back")]

    def __init__(self) -> None:
        super().__init__()
        self._shown: tuple | None = None

    def compose(self) -> ComposeResult:
        yield Label(f"Last {MINUTES} minutes, per minute", id="time-head")
        for key, _title, _meaning in SERIES:
            with Vertical(classes="series"):
                yield Static(id=f"{key}-summary")
                yield Sparkline([0] * MINUTES, summary_function=max, id=f"{key}-chart")
        yield Static(id="time-axis")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="time", exit_on_error=False)
    def load(self) -> None:
        app = self.app
        store = app.ws.store  # type: ignore[attr-defined]
        self.post_message(TimeRead(queries.per_minute(store, app.clock.now(), MINUTES)))  # type: ignore[attr-defined]

    def on_time_read(self, message: TimeRead) -> None:
        data = message.data
        signature = (data.start, data.completed, data.failed, data.retries, data.rescued)
        if signature != self._shown:
            self._shown = signature
            for key, title, meaning in SERIES:
                values = getattr(data, key)
                self.query_one(f"#{key}-summary", Static).update(summary(title, meaning, values))
                self.query_one(f"#{key}-chart", Sparkline).data = values
            self.query_one("#time-axis", Static).update(
                Content(
                    f"{fmt.clock_time(data.start)} UTC  ←  one column a minute  →  "
                    f"{fmt.clock_time(data.start + MINUTES * 60)} UTC (now)"
                )
            )
        self.set_timer(REFRESH_SECONDS, self.load)

    def action_back(self) -> None:
        self.dismiss(None)
