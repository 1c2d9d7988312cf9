"""`enter`: one item in full — attempt timeline, checkpoints with sizes, log tail, clips, audit trail."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Label, Static

from engine import pipeline
from engine.db import queries
from engine.text import inert, one_line

from ..keys import keys_of
from ..messages import DetailRead
from ..widgets import formatting as fmt
from ..widgets.error_detail import describe
from ..widgets.footer import Footer
from . import get_out

REFRESH_SECONDS = 1.0
LOG_LINES = 40


class ItemDetailScreen(Screen[None]):
    DEFAULT_CSS = """
    ItemDetailScreen VerticalScroll {
        height: 1fr;
        padding: 0 1;
    }
    ItemDetailScreen .section {
        text-style: bold;
        color: $accent;
        margin-top: 1;
    }
    ItemDetailScreen DataTable {
        height: auto;
        max-height: 14;
    }
    ItemDetailScreen #detail-head {
        width: 1fr;
        background: $panel;
        padding: 0 1;
        text-style: bold;
    }
    """
    BINDINGS = [
        Binding("escape,q", "back", "Back", id="detail.back"),
        Binding("j", "scroll(1)", "Down", show=False, id="detail.down"),
        Binding("k", "scroll(-1)", "Up", show=False, id="detail.up"),
        *get_out.bindings("detail", show=True),
    ]

    def __init__(self, item_id: str) -> None:
        super().__init__()
        self.item_id = item_id
        self._shown: tuple | None = None

    def compose(self) -> ComposeResult:
        yield Label(f"Item {one_line(self.item_id)}", id="detail-head", markup=False)
        with VerticalScroll():
            yield Static(id="detail-summary")
            yield Label("Attempt timeline", classes="section")
            yield DataTable(id="detail-attempts", cursor_type="none")
            yield Static("(no attempts recorded)", id="detail-no-attempts")
            yield Label("Checkpoints", classes="section")
            yield DataTable(id="detail-checkpoints", cursor_type="none")
            yield Label("Log tail (last attempt with output)", classes="section")
            yield Static(id="detail-log")
            yield Label("Clips", classes="section", id="detail-clips-label")
            yield DataTable(id="detail-clips", cursor_type="none")
            yield Label("Audit trail", classes="section")
            yield Static(id="detail-events")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#detail-attempts", DataTable).add_columns(
            "#", "stage", "outcome", "class", "started", "duration", "decision"
        )
        self.query_one("#detail-checkpoints", DataTable).add_columns(
            "stage", "files", "size", "written", "state"
        )
        self.query_one("#detail-clips", DataTable).add_columns("clip", "status", "stage", "span", "error")
        self.query_one(VerticalScroll).focus()
        self.load()

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def load(self) -> None:
        store = self.app.ws.store  # type: ignore[attr-defined]
        item = queries.item(store, self.item_id)
        clips: list[dict] = []
        if item and item["kind"] == pipeline.EPISODE:
            clips = queries.item_window(
                store, queries.ItemFilter(kind=pipeline.CLIP, parent_id=self.item_id), limit=200
            )
        self.post_message(
            DetailRead(
                item,
                queries.attempts(store, self.item_id),
                queries.item_checkpoints(store, self.item_id),
                clips,
                queries.events(store, self.item_id, limit=20),
            )
        )

    def on_detail_read(self, message: DetailRead) -> None:
        app = self.app
        now = app.clock.now()  # type: ignore[attr-defined]
        limit = app.ws.config.retry.max_attempts  # type: ignore[attr-defined]
        item = message.item
        snapshot = (item, message.attempts, message.checkpoints, message.clips, message.events)
        if snapshot == self._shown:  # nothing changed: keep the tables as they are
            self.set_timer(REFRESH_SECONDS, self.load)
            return
        self._shown = snapshot
        if item is None:
            self.query_one("#detail-summary", Static).update(
                Content.assemble(("This item no longer exists (it was removed by another writer).", "$error"))
            )
            return
        self.query_one("#detail-head", Label).update(
            one_line(
                f"{item['kind']} {item['id']}  ·  {item.get('show') or ''}  ·  {item.get('title') or ''}"
            )
        )
        self.query_one("#detail-summary", Static).update(
            describe(
                item,
                [],
                now,
                limit,
                readonly=app.readonly,  # type: ignore[attr-defined]
                looks=lambda key: fmt.look(app, key),
                keys=keys_of(self),
            )
        )
        attempts = self.query_one("#detail-attempts", DataTable)
        attempts.clear()
        for a in message.attempts:
            attempts.add_row(
                str(a["number"]),
                fmt.plain(a["stage"]),
                fmt.plain(a.get("outcome") or "running"),
                fmt.plain(a.get("error_class")),
                fmt.timestamp(a["started_at"]),
                fmt.duration(a.get("duration")),
                Text(one_line(a.get("decision"))),
            )
        attempts.display = bool(message.attempts)
        self.query_one("#detail-no-attempts").display = not message.attempts
        checkpoints = self.query_one("#detail-checkpoints", DataTable)
        checkpoints.clear()
        order = pipeline.stages_of(item["kind"])
        for c in sorted(
            message.checkpoints, key=lambda c: order.index(c["stage"]) if c["stage"] in order else 99
        ):
            state = "stale" if c["stale"] else "skipped" if c["skipped"] else "ok"
            checkpoints.add_row(
                fmt.plain(c["stage"]),
                str(len(c["files"])),
                fmt.size(c["bytes"]),
                fmt.timestamp(c["created_at"]),
                state,
            )
        log = ""
        for a in reversed(message.attempts):
            if (a.get("log_tail") or a.get("error_detail") or "").strip():
                log = "\n".join(
                    (a.get("log_tail") or a.get("error_detail")).rstrip().splitlines()[-LOG_LINES:]
                )
                break
        self.query_one("#detail-log", Static).update(Content(inert(log) or "(no output recorded yet)"))
        clips = self.query_one("#detail-clips", DataTable)
        clips.clear()
        for c in message.clips:
            span = f"{c['clip_start']:.0f}-{c['clip_end']:.0f} s" if c.get("clip_start") is not None else ""
            clips.add_row(
                fmt.plain(c["id"]),
                Text(fmt.status_text(c, now, limit), style=fmt.look(app, c["status"]).rich),
                fmt.plain(fmt.current_stage(c)),
                span,
                fmt.plain(c.get("error_class")),
            )
        show_clips = item["kind"] == pipeline.EPISODE
        clips.display = show_clips
        self.query_one("#detail-clips-label").display = show_clips
        events = [
            Content.assemble(
                (fmt.timestamp(e["at"]) + " ", "$foreground-muted"),
                (one_line(e["actor"]) + " ", "bold"),
                one_line(e["verb"]),
                (f"  {one_line(e['reason'])}" if e.get("reason") else "", "$foreground-muted"),
                (f"  {one_line(e['result'])}" if e.get("result") else "", "$foreground-muted"),
            )
            for e in message.events
        ]
        self.query_one("#detail-events", Static).update(
            Content("\n").join(events) if events else Content("(no operator or engine events for this item)")
        )
        self.set_timer(REFRESH_SECONDS, self.load)

    def action_copy_error(self) -> None:
        if self._shown is None or self._shown[0] is None:
            self.notify("Copy error: the item is not read yet, or no longer exists.", severity="warning")
            return
        item, attempts = self._shown[0], self._shown[1]
        get_out.copy_error(self, item, attempts)

    def action_open_pager(self) -> None:
        self._read_report()

    @work(thread=True, exclusive=True, group="pager", exit_on_error=False)
    def _read_report(self) -> None:
        text = get_out.read_report(self.app.ws.store, self.item_id)  # type: ignore[attr-defined]
        self.app.call_from_thread(get_out.open_in_pager, self, self.item_id, text, "detail.copy")

    def on_worker_state_changed(self, event) -> None:
        if event.worker.group == "pager" and event.worker.error is not None:
            self.notify(f"Reading the item failed: {event.worker.error}", severity="error", timeout=10)

    def action_back(self) -> None:
        self.dismiss(None)

    def action_scroll(self, lines: int) -> None:
        self.query_one(VerticalScroll).scroll_relative(y=lines, animate=False)
