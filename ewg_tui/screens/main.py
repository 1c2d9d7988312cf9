"""The main screen: header, health, per-stage progress, episode and clip tables, error detail.

Data flow (docs/ARCHITECTURE.md, "UI <-> engine"): a thread worker reads only what is
visible and posts one ViewRead; the next read is scheduled by a one-shot timer
after the previous one is applied, so reads never overlap. Periodic reads are
skipped while a modal is open or live updates are paused (`p`); a change of
view (scrolling the window, a new filter) reads at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable
from textual.worker import Worker, WorkerState

from engine import pipeline
from engine.db import Reader, ReadInterrupted, faults, queries
from engine.db.queries import ItemFilter
from engine.text import one_line
from engine.verbs import Operator, Preview, VerbError

from ..messages import EngineNotice, VerbApplied, VerbPreviewed, VerbRefused, ViewData, ViewRead
from ..widgets import formatting as fmt
from ..widgets.engine_header import EngineHeader, HeaderState
from ..widgets.error_detail import ErrorDetail
from ..widgets.filter_bar import FilterBar
from ..widgets.first_run_hint import FirstRunHint
from ..widgets.footer import Footer
from ..widgets.health_panel import HealthPanel
from ..widgets.item_table import CLIP_COLUMNS, EPISODE_COLUMNS, ItemTable, RenderContext
from ..widgets.stage_progress import StageProgress
from . import get_out
from .audit_log import AuditLogScreen
from .choice import ChoiceScreen
from .confirm_verb import ConfirmVerbScreen
from .failure_groups import FailureGroupsScreen
from .help import HelpEntry, HelpScreen, legend_entries
from .item_detail import ItemDetailScreen
from .time_view import TimeViewScreen
from .verb_catalog import (
    CLIPS,
    EPISODES,
    EXTEND_CHOICES,
    GLOBAL,
    VERBS,
    VERBS_BY_ACTION,
    VerbSpec,
    stage_choices,
)
from .view_reader import ViewRequest, clip_filter_for, read_view

OVERVIEW_EVERY = 4  # health, counts and header are read every 4th poll (about once a second)
SLOW_READ_CAP = 5.0  # the longest a slow read may stretch the refresh, in seconds
MARK_LIMIT = 10_000  # `M` marks at most this many rows (a bulk verb beyond it: the CLI's --where)
SNAPSHOT_MAX_AGE = 60.0  # seconds: an older unfiltered window is not shown while it is read again
FOLLOW_LIMIT = 500  # items followed after a verb, for the "succeeded / failed again" notice


@dataclass
class VerbRequest:
    spec: VerbSpec
    ids: list[str]
    choice: object = None
    reason: str = ""
    since: float = 0.0
    preview: Preview | None = None  # what the confirmation showed: applied as it is, not planned again


def _verb_binding(spec: VerbSpec) -> Binding:
    shown = spec.action in ("retry", "reprocess", "stop")
    return Binding(spec.key, spec.action, spec.title, show=shown, id=spec.binding_id, tooltip=spec.help)


class MainScreen(Screen[None]):
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    BINDINGS = [
        Binding("question_mark", "help", "Help", id="main.help", tooltip="This list of keys"),
        Binding(
            "slash",
            "filter",
            "Filter",
            id="main.filter",
            tooltip="Filter episodes: status:failed stage:enriched show:NAME stuck TEXT",
        ),
        Binding(
            "colon",
            "app.command_palette",
            "Commands",
            show=False,
            id="main.palette",
            tooltip="Command palette: every action by name",
        ),
        Binding(
            "space", "mark", "Mark", id="main.mark", tooltip="Mark the row for a bulk verb (again to unmark)"
        ),
        Binding(
            "M",
            "mark_matching",
            "Mark matching",
            show=False,
            id="main.mark_matching",
            tooltip="Mark every row matching the current filter (bulk verbs then preview first)",
        ),
        Binding(
            "d",
            "toggle_discarded",
            "Dead letters",
            show=False,
            id="main.discarded",
            tooltip="Show or hide discarded items (dead letters; hidden by default)",
        ),
        Binding(
            "escape",
            "clear_marks",
            "Clear marks",
            show=False,
            id="main.clear_marks",
            tooltip="Unmark every marked row",
        ),
        Binding(
            "enter",
            "open_detail",
            "Detail",
            show=False,
            id="main.detail",
            tooltip="Item detail: attempt timeline, checkpoints, log tail, clips",
        ),
        Binding(
            "a",
            "toggle_all_clips",
            "All clips",
            show=False,
            id="main.all_clips",
            tooltip="Switch the clip table between the selected episode's clips and all clips",
        ),
        Binding(
            "i",
            "intervene",
            "Intervene",
            show=False,
            id="main.intervene",
            tooltip="Stuck work (STALLED, TIMED OUT, SLOW): wait longer, terminate and retry, skip, or open the log",
        ),
        Binding(
            "l",
            "audit_log",
            "Audit log",
            show=False,
            id="main.audit",
            tooltip="Audit log (who did what, when, to what) and recovery metrics",
        ),
        Binding(
            "t",
            "time_view",
            "Trends",
            show=False,
            id="main.time_view",
            tooltip="Time view: throughput, failures, retries and rescues per minute over the last hour",
        ),
        Binding(
            "p",
            "toggle_live",
            "Pause updates",
            show=False,
            id="main.live",
            tooltip="Freeze the live refresh (the same key resumes it); the engine keeps working",
        ),
        *get_out.bindings("main", show=False),
        Binding("1", "focus_pane('episodes')", "Episodes", show=False, id="main.pane_episodes"),
        Binding("2", "focus_pane('clips')", "Clips", show=False, id="main.pane_clips"),
        Binding("3", "focus_pane('error-detail')", "Error detail", show=False, id="main.pane_detail"),
        *(_verb_binding(spec) for spec in VERBS),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.episode_filter = ItemFilter(kind=pipeline.EPISODE)
        self.filter_text = ""
        self.all_clips = False
        self.marked: dict[str, dict] = {}  # item id -> its last known row
        self.marked_by_filter = False  # marks came from `M`: every verb previews before it runs
        self.show_discarded = False
        self.followed: dict[str, tuple[str, float]] = {}  # item id -> (verb title, since)
        self.live = True
        self.db_lost_since: float | None = None  # the database server stopped answering the reads
        self.generation = 0
        self.polls = 0
        self._polling = False
        self._poll_again = False
        self._read_seconds = 0.0  # how long the last view read took (it paces the refresh)
        self._overview_due = True  # health, counts and header: read with the next periodic poll
        self._reader: Reader | None = None  # the poll's own connection: a newer view interrupts a stale read
        self._timer: Timer | None = None
        self._want_offset: dict[str, int] = {"episodes": 0, "clips": 0}
        self.view: ViewData | None = None
        self._counted_filter: ItemFilter | None = None  # the poll worker's: the last filter it counted
        self._text_start: tuple[ItemFilter | None, str | None] = (None, None)  # see _narrowed_start
        self._unfiltered: ViewData | None = None  # the last first window read without a filter
        self._known_stuck = 0
        self._detail_id: str | None = None
        self._bindings_key: tuple = ()

    # -- layout ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        app = self.app
        yield EngineHeader(id="engine-header")
        with Grid(id="overview"):
            yield StageProgress(pipeline.EPISODE, id="episode-progress")
            yield StageProgress(pipeline.CLIP, id="clip-progress")
            yield HealthPanel(app.ws.config.health, id="health")  # type: ignore[attr-defined]
        yield ItemTable(EPISODE_COLUMNS, id="episodes")  # the width picks the columns (fit_columns)
        with Horizontal(id="bottom"):
            yield ItemTable(CLIP_COLUMNS, id="clips")
            yield ErrorDetail(id="error-detail")
        yield FilterBar(id="filter")
        yield Footer()
        if app.first_run_hint:  # type: ignore[attr-defined]
            yield FirstRunHint()

    def on_unmount(self) -> None:
        if self._reader is not None:
            self._reader.interrupt()  # a scan still running for a closed screen is not worth finishing

    def on_mount(self) -> None:
        self.episodes.show_title("Episodes")
        self.clips.show_title("Clips")
        self.query_one("#error-detail").border_title = "Error detail"
        self.query_one("#episode-progress").border_title = "Episodes"
        self.query_one("#clip-progress").border_title = "Clips"
        self.query_one("#health").border_title = "Health"
        self.episodes.focus()
        self._show_header()
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._restyle())
        self.call_after_refresh(self.poll, True)

    @property
    def episodes(self) -> ItemTable:
        return self.query_one("#episodes", ItemTable)

    @property
    def clips(self) -> ItemTable:
        return self.query_one("#clips", ItemTable)

    def _key(self, binding_id: str) -> str:
        """The key a hint names for a binding: the active one (the keymap's, else the default)."""
        return self.app.keys.label(binding_id)  # type: ignore[attr-defined]

    @property
    def operator(self) -> Operator:
        return self.app.operator  # type: ignore[attr-defined]

    def render_context(self, now: float) -> RenderContext:
        return RenderContext(
            now,
            self.app.ws.config.retry.max_attempts,  # type: ignore[attr-defined]
            lambda variable: fmt.theme_style(self.app, variable),
            lambda key: fmt.look(self.app, key),
        )

    # -- polling -----------------------------------------------------------------------
    def poll(self, forced: bool = False) -> None:
        """Read the visible window now (forced) or as the periodic refresh."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self._polling:
            self._poll_again = True
            return
        if not forced and (not self.live or self.app.screen is not self):
            self._schedule()
            return
        # Health, counts and the header follow their own pace; a key that moves the view reads only the view.
        if not forced and self.polls % OVERVIEW_EVERY == 0:
            self._overview_due = True
        request = self._request(with_overview=self.view is None or (not forced and self._overview_due))
        self.polls += 1
        self._polling = True
        if self._reader is not None:
            self._reader.resume()
        self._read(request)

    def _schedule(self) -> None:
        # A slow read (a sort by a column no index covers, over 100k rows) is not repeated at the poll
        # rate: the refresh waits three times as long as the read took, so it never takes a core.
        interval = max(self.app.poll_interval, min(SLOW_READ_CAP, 3 * self._read_seconds))  # type: ignore[attr-defined]
        self._timer = self.set_timer(interval, self.poll)

    def _request(self, with_overview: bool) -> ViewRequest:
        table = self.episodes
        episode_id = table.current_id
        follows = self._focused_table() is table  # the detail follows the episode cursor
        return ViewRequest(
            generation=self.generation,
            episode_filter=self.episode_filter,
            episode_offset=self._want_offset["episodes"],
            episode_limit=self.episodes.window_size,
            episode_id=episode_id,
            clip_filter=clip_filter_for(episode_id, self.all_clips, self.show_discarded),
            clip_offset=self._want_offset["clips"],
            clip_limit=self.clips.window_size,
            detail_id=self._selected_detail_id(),
            with_overview=with_overview,
            followed=tuple((i, since) for i, (_verb, since) in list(self.followed.items())[:FOLLOW_LIMIT]),
            episode_cursor=(table.pending_cursor, episode_id, table.cursor_row) if follows else None,
            sort=table.sort_by,
            descending=table.sort_descending,
            clip_sort=self.clips.sort_by,
            clip_descending=self.clips.sort_descending,
            all_clips=self.all_clips,
            show_discarded=self.show_discarded,
            text_start=self._text_start[1] if self._text_start[0] == self.episode_filter else None,
        )

    @work(thread=True, group="poll", exit_on_error=False)
    def _read(self, request: ViewRequest) -> None:
        reader = self._reader
        if reader is None:  # opened here: connecting is database work, not the event loop's
            reader = self._reader = self.app.ws.store.reader()  # type: ignore[attr-defined]
        started = time.perf_counter()
        try:
            # A new free-text filter shows its rows before its count; a refresh of one shown does not
            # (the title would flicker between "counting" and the total on every poll).
            new_filter = request.episode_filter != self._counted_filter
            data = read_view(
                reader,
                request,
                self.app.clock.now(),  # type: ignore[attr-defined]
                shown=(lambda first: self.post_message(ViewRead(first, partial=True)))
                if new_filter
                else None,
            )
            self._counted_filter = request.episode_filter
            self._read_seconds = time.perf_counter() - started
            if data.overview is not None and not data.overview.resource_pause:
                data.overview.resource_pause = self.app.ws.disk_floor_breach()  # type: ignore[attr-defined]
        except ReadInterrupted:
            data = None  # stale: the view changed while reading (see _changed_view)
        self.post_message(ViewRead(data))

    def on_view_read(self, message: ViewRead) -> None:
        data = message.data
        if message.partial:  # the read goes on: its whole result follows
            if data is not None and data.generation == self.generation:
                self._apply(data)
            return
        self._polling = False
        if data is not None and self.db_lost_since is not None:
            self.db_lost_since = None  # the database answers again
            self._show_header()
        if data is not None and data.generation == self.generation:
            if data.overview is not None:
                self._overview_due = False
            self._apply(data)
        else:
            self._poll_again = True  # the view changed while reading: read the new one
        if self._poll_again:
            self._poll_again = False
            self.poll(True)
        else:
            self._schedule()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        if event.worker.group == "poll":
            self._polling = False
            if error is not None and faults.fault(error) == faults.LOST:
                if self.db_lost_since is None:  # said once in the header, not a toast every poll
                    self.db_lost_since = time.time()
                    self._show_header()
            else:
                self.notify(
                    f"Reading the workspace failed: {one_line(str(error))}. Retrying.",
                    severity="error",
                    markup=False,
                )
            self._first_view_shown()  # the engine does not wait for a screen that cannot read
            if self._poll_again:  # the view changed meanwhile: read it now, not at the next tick
                self._poll_again = False
                self.poll(True)
            else:
                self._schedule()
        elif event.worker.group == "verbs":
            self.notify(f"The verb failed: {error}", severity="error", markup=False, timeout=10)
        elif event.worker.group in ("copy", "pager"):
            self.notify(f"Reading the item failed: {error}", severity="error", markup=False, timeout=10)

    def _apply(self, data: ViewData) -> None:
        previous = self.view
        self.view = data
        flt = data.episode_filter
        if (
            flt is not None
            and flt == ItemFilter(kind=pipeline.EPISODE, show_discarded=flt.show_discarded)
            and data.episode_offset == 0
            and not data.counting
        ):
            self._unfiltered = data  # shown at once when a filter is left (_show_unfiltered_snapshot)
        if data.overview is None and previous is not None:
            data.overview, data.counts = previous.overview, previous.counts
        ctx = self.render_context(data.now)
        marked = set(self.marked)
        for row in data.episodes + data.clips:
            if row["id"] in self.marked:
                self.marked[row["id"]] = row
        with self.app.batch_update():
            self.episodes.show_window(
                data.episodes, data.episode_offset, data.episode_total, ctx, marked, counting=data.counting
            )
            self.clips.show_window(data.clips, data.clip_offset, data.clip_total, ctx, marked)
            self._want_offset = {"episodes": data.episode_offset, "clips": data.clip_offset}
            self._titles()
            if data.counts is not None:
                self.query_one("#episode-progress", StageProgress).show(data.counts)
                self.query_one("#clip-progress", StageProgress).show(data.counts)
            if data.overview is not None:
                self.query_one("#health", HealthPanel).show(data.overview)
            self._show_header()
            self.query_one(ErrorDetail).show(
                data.detail,
                data.detail_attempts,
                data.now,
                self.app.ws.config.retry.max_attempts,  # type: ignore[attr-defined]
                self.app.readonly,
            )  # type: ignore[attr-defined]
        if previous is None:
            self.call_after_refresh(self._first_view_shown)  # once this frame is drawn
        self._report_follow_ups(data.follow_ups)
        self._report_stuck(data)
        if self._selected_detail_id() != data.detail_id:
            self._changed_view(reset_clips=False)  # the cursor moved while reading: read its detail
        self._refresh_bindings_if_changed()

    def _first_view_shown(self) -> None:
        """The first window is on screen (or its read failed): what waited for it may start now."""
        hook, self.app.after_first_view = self.app.after_first_view, None  # type: ignore[attr-defined]
        if hook is not None:
            hook()

    def _refresh_bindings_if_changed(self) -> None:
        """Rebuilding the footer repaints it: do it only when what the verbs depend on has changed."""

        def state(row: dict | None) -> tuple:
            return tuple((row or {}).get(k) for k in ("id", "status", "stage", "next_stage"))

        overview = self.view.overview if self.view else None
        key = (
            self.focused.id if self.focused else None,
            state(self.episodes.current_row),
            state(self.clips.current_row),
            tuple(sorted(self.marked)),
            bool(overview and overview.paused),
        )
        if key != self._bindings_key:
            self._bindings_key = key
            self.refresh_bindings()

    def _titles(self) -> None:
        filt = f"  filter: {self.filter_text}" if self.filter_text else ""
        order = f"  {self.episodes.sort_label}" if self.episodes.sort_label else ""
        self.episodes.show_title(f"Episodes {self.episodes.position_label}{order}{filt}")
        clip_order = f"  {self.clips.sort_label}" if self.clips.sort_label else ""
        if self.all_clips:
            back = self.app.keys.label("main.all_clips")  # type: ignore[attr-defined]
            self.clips.show_title(
                f"All clips {self.clips.position_label}{clip_order}  ({back}: this episode's)"
            )
        else:
            episode = self.episodes.current_id
            of = fmt.short_id(episode, 18 if self.has_class("-narrow") else 34) if episode else "no episode"
            count = self.clips.position_label if self.clips.total else "none yet"
            self.clips.show_title(f"Clips of {of}: {count}{clip_order}")

    def _show_header(self) -> None:
        app = self.app
        engine = app.engine  # type: ignore[attr-defined]
        self.query_one(EngineHeader).show(
            HeaderState(
                workspace=str(app.ws.root),  # type: ignore[attr-defined]
                overview=self.view.overview if self.view else None,
                local_state=engine.state if engine else None,
                local_workers=engine.workers if engine else 0,
                local_busy=engine.busy() if engine else 0,
                attached=engine is None,
                readonly=app.readonly,  # type: ignore[attr-defined]
                live=self.live,
                marked=len(self.marked),
                db_lost_since=self.db_lost_since or app.ws.store.unreachable_since,  # type: ignore[attr-defined]
            )
        )

    def _restyle(self) -> None:
        if self.view is not None:
            ctx = self.render_context(self.view.now)
            self.episodes.restyle(ctx, set(self.marked))
            self.clips.restyle(ctx, set(self.marked))

    def _changed_view(self, reset_clips: bool = True) -> None:
        self.generation += 1
        if self._polling and self._reader is not None:
            self._reader.interrupt()  # the read in flight is for the view just left: not worth finishing
        if reset_clips:
            self._want_offset["clips"] = 0
        self.poll(True)

    def _report_follow_ups(self, outcomes: dict[str, str]) -> None:
        for item_id, outcome in outcomes.items():
            verb, _since = self.followed.pop(item_id, ("", 0.0))
            if outcome == "succeeded":
                self.notify(f"{item_id} succeeded after {verb.lower()}.", title="Recovered", markup=False)
            else:
                self.notify(
                    f"{item_id} failed again after {verb.lower()}; {self._key('main.detail')} shows why.",
                    title="Failed again",
                    severity="error",
                    markup=False,
                    timeout=8,
                )

    def _report_stuck(self, data: ViewData) -> None:
        if data.overview is None:
            return
        stuck = data.overview.stuck
        if stuck > self._known_stuck:
            self.notify(
                f"{stuck} running item(s) are stuck (STALLED or TIMED OUT). Filter with "
                f"{self._key('main.filter')} stuck, then {self._key('main.intervene')} to intervene.",
                title="Stuck work",
                severity="warning",
                markup=False,
            )
        self._known_stuck = stuck

    # -- selection -----------------------------------------------------------------------
    def _focused_table(self) -> ItemTable:
        focused = self.focused
        if focused is self.clips:
            return self.clips
        if isinstance(focused, ErrorDetail) and self._detail_id and self._detail_id in self.clips.rows_by_id:
            return self.clips
        return self.episodes

    def _selected_detail_id(self) -> str | None:
        table = self._focused_table()
        current = table.current_id
        self._detail_id = current
        return current

    def selected_rows(self, spec: VerbSpec | None = None) -> list[dict]:
        """The rows a verb acts on: the marked rows of the verb's kind, else the cursor row of the pane
        that holds that kind (clip verbs look at the clip table, episode verbs at the episode table)."""
        if spec is not None and spec.scope == GLOBAL:
            return []
        scope = spec.scope if spec is not None else None
        if scope == CLIPS:
            kind, table = pipeline.CLIP, self.clips
        elif scope == EPISODES:
            kind, table = pipeline.EPISODE, self.episodes
        else:
            kind, table = None, self._focused_table()
        if spec is not None and spec.single:  # rollback and extend act on the cursor row only
            row = table.current_row
            return [row] if row and (kind is None or row["kind"] == kind) else []
        if self.marked:
            return [r for r in self.marked.values() if kind is None or r["kind"] == kind]
        row = table.current_row
        return [row] if row else []

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        spec = VERBS_BY_ACTION.get(action)
        if action == "intervene":
            row = self._focused_table().current_row
            return True if row and row["status"] == "running" and row.get("verdict") else None
        if action in ("copy_error", "open_pager"):
            return True if self._focused_table().current_id else None
        if spec is None:
            return True
        if self.app.readonly:  # type: ignore[attr-defined]
            return None
        if spec.scope == GLOBAL:
            return True
        rows = self.selected_rows(spec)
        if not rows:
            return None
        if spec.applies is None or any(spec.applies(r) for r in rows):
            return True
        return None

    # -- table events --------------------------------------------------------------------
    @on(ItemTable.WindowRequested)
    def _slide_window(self, event: ItemTable.WindowRequested) -> None:
        name = "episodes" if event.table is self.episodes else "clips"
        event.table.pending_cursor = event.cursor
        self._want_offset[name] = event.offset
        self._changed_view(reset_clips=name == "episodes")

    @on(ItemTable.SortRequested)
    def _sorted(self, event: ItemTable.SortRequested) -> None:
        name = "episodes" if event.table is self.episodes else "clips"
        self._want_offset[name] = 0
        self._titles()
        self._changed_view(reset_clips=name == "episodes")

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        view = self.view
        if (
            event.data_table is self.episodes
            and view is not None
            and view.episode_id is not None
            and self.episodes.current_id == view.episode_id == view.detail_id
            and self._focused_table() is self.episodes
        ):
            return  # the cursor landed where the last read expected: its detail and clips are shown
        if event.data_table is self.episodes and not self.all_clips:
            self._changed_view(reset_clips=True)
        else:
            self._changed_view(reset_clips=False)

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_detail()

    def on_descendant_focus(self) -> None:
        if self.view is not None and self._detail_id != self._selected_detail_id():
            self._changed_view(reset_clips=False)
        self.refresh_bindings()

    # -- filter --------------------------------------------------------------------------
    def action_filter(self) -> None:
        bar = self.query_one(FilterBar)
        bar.value = self.filter_text
        bar.open()
        self._read_shows(bar)

    @work(thread=True, group="shows", exclusive=True, exit_on_error=False)
    def _read_shows(self, bar: FilterBar) -> None:
        """Show names for the bar's suggestions: database work, so not on the event loop."""
        bar.suggestions.shows = queries.shows(self.app.ws.store)  # type: ignore[attr-defined]

    @on(FilterBar.FilterChanged)
    def _filter_changed(self, event: FilterBar.FilterChanged) -> None:
        if event.flt is None:
            return
        self.episode_filter = replace(event.flt, show_discarded=self.show_discarded)
        self._text_start = (self.episode_filter, self._narrowed_start(self.episode_filter))
        self.filter_text = event.text.strip()
        self._want_offset["episodes"] = 0
        self.episodes.pending_cursor = "first"
        self._changed_view()

    def _narrowed_start(self, flt: ItemFilter) -> str | None:
        """The first row shown, when `flt` only adds letters to the free text of the filter those
        rows were read for (in id order from the top): every match of `flt` matched that filter."""
        view = self.view
        shown = view.episode_filter if view is not None else None
        if (
            shown is None
            or not view.episodes
            or view.episode_offset
            or view.episode_order != ("id", False)  # the rows' own order (the read ignores it in others)
            or not shown.text
            or shown.text not in flt.text
            or replace(flt, text=shown.text) != shown
        ):
            return None
        return view.episodes[0]["id"]

    @on(FilterBar.FilterLeft)
    def _filter_left(self, event: FilterBar.FilterLeft) -> None:
        if not event.keep:
            self.episode_filter = ItemFilter(kind=pipeline.EPISODE, show_discarded=self.show_discarded)
            self.filter_text = ""
            self._want_offset["episodes"] = 0
            self._show_unfiltered_snapshot()
            self._changed_view()
        self.episodes.focus()

    def _show_unfiltered_snapshot(self) -> None:
        """Leaving a filter shows the unfiltered first window as last read, in the frame that closes
        the bar, and the read it starts brings it up to date (only changed cells are drawn again):
        esc costs one frame, not a frame, a read and another frame (55-70 ms with the cores busy)."""
        snapshot = self._unfiltered
        if snapshot is None or snapshot.episode_filter != self.episode_filter:
            return
        if snapshot.episode_order != (self.episodes.sort_by, self.episodes.sort_descending):
            return  # read in another order
        if self.app.clock.now() - snapshot.now > SNAPSHOT_MAX_AGE:  # type: ignore[attr-defined]
            return  # too old to show even for a moment
        ctx = self.render_context(snapshot.now)
        self.episodes.show_window(snapshot.episodes, 0, snapshot.episode_total, ctx, set(self.marked))
        self._titles()

    # -- view actions --------------------------------------------------------------------
    def action_help(self) -> None:
        keys = self.app.keys  # type: ignore[attr-defined]
        entries = []
        for group in ("Recovery", "Clips", "Engine"):
            for spec in VERBS:
                if spec.group == group:
                    enabled = self.check_action(spec.action, ()) is True
                    confirm = " (asks first)" if spec.confirm else ""
                    entries.append(
                        HelpEntry(
                            group,
                            keys.labels(spec.binding_id),
                            f"{spec.title}: {spec.help}{confirm}",
                            enabled,
                            binding_id=spec.binding_id,
                        )
                    )
        entries += [
            HelpEntry(
                "View",
                keys.labels(b.id),
                b.tooltip or b.description,
                self.check_action(b.action, ()) is True,
                binding_id=b.id or "",
            )
            for b in self._view_bindings()
        ]

        def pair(first: str, second: str) -> tuple[str, str]:
            return f"{keys.label(first)} / {keys.label(second)}", f"{first}, {second}"

        navigation = [
            (*pair("table.down", "table.up"), "move down / up (↓ ↑ too)"),
            (*pair("table.first", "table.last"), "first / last row (the window slides in SQL)"),
            ("pgup/dn", "", "page up / down"),
            ("tab", "", "next pane: episodes, clips, error detail"),
            (
                *pair("table.sort", "table.sort_reverse"),
                "sort by the next column / reverse (a header click sorts by that column)",
            ),
        ]
        entries += [HelpEntry("Navigation", k, d, binding_id=i) for k, i, d in navigation]
        entries += [
            HelpEntry(
                "App",
                keys.labels("app.quit"),
                "Quit (asks what to do with work in flight)",
                binding_id="app.quit",
            ),
            HelpEntry(
                "App",
                f"{keys.label('main.palette')} ctrl+p",
                "Command palette: every action by name",
                binding_id="main.palette",
            ),
        ]
        entries += legend_entries(lambda key: fmt.look(self.app, key), keys)
        note = "Read-only mode: verbs are shown but do not run." if self.app.readonly else ""  # type: ignore[attr-defined]
        self.app.push_screen(HelpScreen(entries, note))

    def _view_bindings(self) -> list[Binding]:
        return [
            b
            for b in self.BINDINGS
            if isinstance(b, Binding) and b.action not in VERBS_BY_ACTION and b.id != "main.palette"
        ]

    def action_toggle_live(self) -> None:
        self.live = not self.live
        self._show_header()
        self.notify(
            f"Live updates paused; {self._key('main.live')} resumes."
            if self.live is False
            else "Live updates resumed.",
            markup=False,
        )
        if self.live:
            self.poll(True)

    def action_toggle_all_clips(self) -> None:
        self.all_clips = not self.all_clips
        self._changed_view()

    def action_focus_pane(self, pane: str) -> None:
        self.query_one(f"#{pane}").focus()

    def action_mark(self) -> None:
        table = self._focused_table()
        row = table.current_row
        if row is None:
            return
        if row["id"] in self.marked:
            del self.marked[row["id"]]
        else:
            self.marked[row["id"]] = row
        if self.view is not None:
            table.restyle(self.render_context(self.view.now), set(self.marked))
        if table.cursor_row < len(table.order) - 1:
            table.action_cursor_down()
        self._show_header()
        self.refresh_bindings()

    def action_mark_matching(self) -> None:
        """Bulk by filter: mark every row the focused table's filter matches (read in SQL, all of them,
        not only the window on screen)."""
        table = self._focused_table()
        if table is self.clips:
            flt = clip_filter_for(self.episodes.current_id, self.all_clips, self.show_discarded)
        else:
            flt = self.episode_filter
        self._read_matching(flt)

    @work(thread=True, group="marks", exit_on_error=False)
    def _read_matching(self, flt: ItemFilter) -> None:
        store = self.app.ws.store  # type: ignore[attr-defined]
        total = queries.count_items(store, flt)
        rows = queries.item_window(store, flt, limit=min(total, MARK_LIMIT)) if total else []
        self.app.call_from_thread(self._marked_matching, rows, total)

    def _marked_matching(self, rows: list[dict], total: int) -> None:
        if not rows:
            self.notify("Mark matching: no row matches the filter; nothing marked.", markup=False)
            return
        self.marked = {r["id"]: r for r in rows}
        self.marked_by_filter = True
        more = f" (the first {len(rows)} of {total})" if total > len(rows) else ""
        self.notify(
            f"Marked {len(rows)} row(s) matching the filter{more}. Every verb shows its preview first; "
            f"{self._key('main.clear_marks')} clears the marks.",
            title="Mark matching",
            markup=False,
        )
        self._restyle()
        self._show_header()
        self.refresh_bindings()

    def action_toggle_discarded(self) -> None:
        self.show_discarded = not self.show_discarded
        self.episode_filter = replace(self.episode_filter, show_discarded=self.show_discarded)
        self.notify(
            f"Showing discarded items (dead letters); {self._key('main.discarded')} hides them."
            if self.show_discarded
            else f"Discarded items hidden; {self._key('main.discarded')} shows them.",
            markup=False,
        )
        self._changed_view()

    def action_clear_marks(self) -> None:
        if not self.marked:
            return
        self.marked_by_filter = False
        self.marked.clear()
        self._restyle()
        self._show_header()
        self.refresh_bindings()

    def action_intervene(self) -> None:
        row = self._focused_table().current_row
        if row is None or row["status"] != "running" or not row.get("verdict"):
            self.notify(
                "Intervene applies to running work the watchdog flagged (STALLED, TIMED OUT, SLOW).",
                severity="warning",
                markup=False,
            )
            return
        stalled_for = ""
        if (
            self.view is not None
            and self.view.detail
            and self.view.detail.get("id") == row["id"]
            and self.view.detail.get("progress_at")
        ):
            stalled_for = f", no progress for {fmt.duration(self.view.now - self.view.detail['progress_at'])}"
        title = f"{row['id']} is {row['verdict']} at {fmt.current_stage(row)}{stalled_for}"
        choices: list[tuple[object, str]] = [
            ("extend", f"Wait longer: extend its timeout ({self._key('verb.extend')})"),
            ("terminate", "Terminate and retry the stage (asks first)"),
            ("skip", f"Skip the stage ({self._key('verb.skip')}, asks first)"),
            ("log", f"Open the log and attempt history ({self._key('main.detail')})"),
        ]
        if self.app.readonly:  # type: ignore[attr-defined]
            choices = choices[-1:]

        def chosen(choice: object) -> None:
            if choice == "extend":
                self.start_verb(VERBS_BY_ACTION["extend"])
            elif choice == "terminate":
                self._next_step(VerbRequest(VERBS_BY_ACTION["reprocess"], [row["id"]], row["next_stage"]))
            elif choice == "skip":
                self.start_verb(VERBS_BY_ACTION["skip"])
            elif choice == "log":
                self.app.push_screen(ItemDetailScreen(row["id"]))

        self.app.push_screen(ChoiceScreen(title, choices), chosen)

    def action_audit_log(self) -> None:
        self.app.push_screen(AuditLogScreen())

    def action_time_view(self) -> None:
        self.app.push_screen(TimeViewScreen())

    def action_open_detail(self) -> None:
        item_id = self._focused_table().current_id
        if item_id:
            self.app.push_screen(ItemDetailScreen(item_id))

    def _selected_with_detail(self) -> tuple[dict, list[dict]] | None:
        """The selected row and its attempts as the last view read them, if that read is of this row."""
        item_id = self._focused_table().current_id
        view = self.view
        if item_id and view is not None and view.detail and view.detail.get("id") == item_id:
            return view.detail, view.detail_attempts
        return None

    def action_copy_error(self) -> None:
        item_id = self._focused_table().current_id
        if not item_id:
            self.notify("Copy error: select a row first.", severity="warning")
            return
        shown = self._selected_with_detail()
        if shown is not None:
            get_out.copy_error(self, *shown)  # what the error pane shows: no read needed
        else:
            self._read_for_copy(item_id)  # the cursor moved since the last read

    @work(thread=True, group="copy", exclusive=True, exit_on_error=False)
    def _read_for_copy(self, item_id: str) -> None:
        store = self.app.ws.store  # type: ignore[attr-defined]
        item = queries.item(store, item_id)
        attempts = queries.attempts(store, item_id) if item else []
        self.app.call_from_thread(self._copy_read, item_id, item, attempts)

    def _copy_read(self, item_id: str, item: dict | None, attempts: list[dict]) -> None:
        if item is None:
            self.notify(f"{item_id} no longer exists.", title="Copy error", severity="warning")
        else:
            get_out.copy_error(self, item, attempts)

    def action_open_pager(self) -> None:
        item_id = self._focused_table().current_id
        if not item_id:
            self.notify("Pager: select a row first.", severity="warning")
            return
        self._read_report(item_id)

    @work(thread=True, group="pager", exclusive=True, exit_on_error=False)
    def _read_report(self, item_id: str) -> None:
        text = get_out.read_report(self.app.ws.store, item_id)  # type: ignore[attr-defined]
        self.app.call_from_thread(get_out.open_in_pager, self, item_id, text, "main.copy")

    def palette_commands(self) -> list[tuple[str, str, str]]:
        commands = [
            (b.description, b.tooltip or b.description, b.action)
            for b in self._view_bindings()
            if b.action != "app.command_palette"
        ]
        for spec in VERBS:
            if self.check_action(spec.action, ()) is True:
                commands.append((spec.title, f"{spec.help} [{self._key(spec.binding_id)}]", spec.action))
        return commands

    # -- verbs ---------------------------------------------------------------------------
    def start_verb(self, spec: VerbSpec) -> None:
        if self.app.readonly:  # type: ignore[attr-defined]
            self.notify(
                "Read-only console: verbs do not run here. Open ewg without --readonly to act.",
                severity="warning",
                markup=False,
            )
            return
        rows = self.selected_rows(spec)
        if spec.scope != GLOBAL and not rows:
            self.notify(
                f"{spec.title}: select a {'clip' if spec.scope == CLIPS else 'row'} first.",
                severity="warning",
                markup=False,
            )
            return
        ids = [r["id"] for r in rows]
        request = VerbRequest(spec, ids)
        if spec.action == "toggle_engine":
            overview = self.view.overview if self.view else None
            request.choice = bool(overview and overview.paused)
        if spec.choose == "failure_group":
            self._choose_screen(request, FailureGroupsScreen())
        elif spec.choose == "extend_seconds":
            self._choose(request, "Extend the timeout of " + ids[0] + " by", list(EXTEND_CHOICES))
        elif spec.choose in ("reprocess_stage", "rollback_stage"):
            choices = stage_choices(spec, rows[0])
            if not choices:
                self.notify(
                    f"{ids[0]} has no earlier checkpoint to roll back to.", severity="warning", markup=False
                )
                return
            what = ids[0] if len(ids) == 1 else f"{len(ids)} items"
            title = f"Force reprocess {what}" if spec.choose == "reprocess_stage" else f"Roll {what} back"
            self._choose(request, title, choices)
        else:
            self._next_step(request)

    def _choose(self, request: VerbRequest, title: str, choices: list[tuple[object, str]]) -> None:
        self._choose_screen(request, ChoiceScreen(title, choices))

    def _choose_screen(self, request: VerbRequest, screen) -> None:
        def chosen(value: object) -> None:
            if value is None:
                return
            request.choice = value
            self._next_step(request)

        self.app.push_screen(screen, chosen)

    def _next_step(self, request: VerbRequest) -> None:
        bulk = self.marked_by_filter and request.spec.scope != GLOBAL
        self._run_verb(request, dry_run=request.spec.confirm or bulk)

    @work(thread=True, group="verbs", exit_on_error=False)
    def _run_verb(self, request: VerbRequest, dry_run: bool) -> None:
        app = self.app
        if not dry_run:
            request.since = app.clock.now()  # type: ignore[attr-defined]
        try:
            if not dry_run and request.preview is not None and request.preview.replayable:
                preview = self.operator.apply(request.preview, request.reason)  # what was confirmed
            else:
                preview = request.spec.runner(
                    self.operator, request.ids, request.choice, request.reason, dry_run
                )
        except VerbError as exc:
            self.post_message(VerbRefused(request, str(exc)))
            return
        self.post_message(VerbPreviewed(request, preview) if dry_run else VerbApplied(request, preview))

    def on_verb_previewed(self, message: VerbPreviewed) -> None:
        request, preview = message.request, message.preview
        if preview.nothing_to_do and (preview.also is None and not preview.notes):
            self._report_nothing(request, preview)
            return

        def confirmed(reason: str | None) -> None:
            if reason is None:
                self.notify(f"{request.spec.title}: cancelled, nothing changed.", markup=False)
                return
            request.reason = reason
            request.preview = preview
            self._run_verb(request, dry_run=False)

        self.app.push_screen(ConfirmVerbScreen(self._confirm_title(request, preview), preview), confirmed)

    def _confirm_title(self, request: VerbRequest, preview: Preview) -> str:
        count = len(preview.changes)
        target = (
            "the workspace"
            if request.spec.scope == GLOBAL and not count
            else (preview.changes[0].item_id if count == 1 else f"{count} items")
        )
        return f"{request.spec.title}: {target}?"

    def _report_nothing(self, request: VerbRequest, preview: Preview) -> None:
        why = "; ".join(f"{i} {w}" for i, w in preview.skipped[:3]) or "nothing matches"
        self.notify(f"{request.spec.title}: nothing to do ({why}).", severity="warning", markup=False)

    def on_verb_applied(self, message: VerbApplied) -> None:
        request, preview = message.request, message.preview
        if not preview.applied and preview.nothing_to_do:
            self._report_nothing(request, preview)
            return
        text = preview.summary()
        if preview.skipped:
            text += ". " + "; ".join(f"{i} {w}" for i, w in preview.skipped[:3])
        self.notify(text[:1].upper() + text[1:] + ".", title=request.spec.title, markup=False)
        if request.spec.action not in (
            "toggle_engine",
            "stop_processing",
            "deep_clean",
            "stop",
            "force_stop",
        ):
            for item_id in preview.item_ids:
                self.followed[item_id] = (request.spec.title, request.since)
        engine = self.app.engine  # type: ignore[attr-defined]
        if engine is not None:
            engine.wake()
        if self.marked:
            self.action_clear_marks()
        self._changed_view(reset_clips=False)

    def on_verb_refused(self, message: VerbRefused) -> None:
        self.notify(
            message.text, title=message.request.spec.title, severity="error", markup=False, timeout=10
        )

    def on_engine_notice(self, message: EngineNotice) -> None:
        """The in-process engine reported an event (handed on by the app)."""
        if message.event.kind == "state":
            self._show_header()


def _verb_action(spec: VerbSpec):
    def action(self: MainScreen) -> None:
        self.start_verb(spec)

    action.__name__ = f"action_{spec.action}"
    action.__doc__ = spec.help
    return action


for _spec in VERBS:
    setattr(MainScreen, f"action_{_spec.action}", _verb_action(_spec))
