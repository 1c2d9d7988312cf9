"""A DataTable that holds only a window of items; the screen fetches the window in SQL.

Rows are keyed by item id and updated in place inside `batch_update()`; rows
that leave the window are removed and new ones added, never a clear-and-rebuild.
Moving the cursor past either edge asks the screen (WindowRequested) to slide
the window, so 100k items cost the same as 100.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from rich.padding import Padding
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.cache import LRUCache
from textual.content import Content
from textual.message import Message
from textual.renderables.styled import Styled
from textual.widgets import DataTable

from engine.text import one_line

from . import formatting as fmt

END = 2**62  # "the last window" while the count is not known yet: the read clamps it to the end

CellRender = Callable[[dict, "RenderContext"], Text]


@dataclass
class RenderContext:
    now: float
    max_attempts: int
    styles: Callable[[str], object]  # theme variable -> Rich style
    looks: Callable[[str], fmt.Look] = lambda key: fmt.Look()  # status or verdict -> its look (PALETTE)
    hidden: frozenset[str] = field(
        default_factory=frozenset
    )  # columns the width left out (the table sets it)


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int
    render: CellRender
    sort: str | None = None  # the items column this one sorts by, in SQL (queries.SORTABLE)
    priority: int = 9  # lower is kept longer when the terminal narrows
    widest: int = 0  # a column that takes the room left over, up to this width (the id)


def _status(row: dict, ctx: RenderContext) -> Text:
    """Glyph, words and the state's look; when the verdict column is left out (80 columns) a flagged
    running item shows its verdict here instead, so STALLED is never off-screen."""
    verdict = row.get("verdict")
    if verdict and row["status"] == "running" and "verdict" in ctx.hidden:
        text, key = f"{fmt.glyph(verdict)} {verdict}", verdict
    else:
        text, key = fmt.status_text(row, ctx.now, ctx.max_attempts), row["status"]
    return Text(text, style=ctx.looks(key).rich, no_wrap=True, overflow="ellipsis")


def _verdict(row: dict, ctx: RenderContext) -> Text:
    verdict = row.get("verdict") or ""
    if not verdict:
        return Text("", no_wrap=True)
    return Text(f"{fmt.glyph(verdict)} {verdict}", style=ctx.looks(verdict).rich, no_wrap=True)


def _error(row: dict, ctx: RenderContext) -> Text:
    return Text(
        one_line(row.get("error_class")),
        style=ctx.looks("failed").rich if row["status"] == "failed" else "",
        no_wrap=True,
        overflow="ellipsis",
    )


def _id(width: int) -> CellRender:
    return lambda row, ctx: fmt.plain(fmt.short_id(row["id"], width))


def _clip_id(row: dict, ctx: RenderContext) -> Text:
    return fmt.plain(row["id"].rsplit("__", 1)[-1] if "__" in row["id"] else row["id"])


EPISODE_COLUMNS = (
    Column("id", "episode", 20, _id(20), sort="id", priority=0, widest=34),
    Column("status", "status", 18, _status, sort="status", priority=0),
    Column("stage", "stage", 11, lambda r, c: fmt.plain(fmt.current_stage(r)), sort="stage", priority=2),
    Column(
        "progress",
        "%",
        4,
        lambda r, c: Text(fmt.progress_label(r), justify="right"),
        sort="progress",
        priority=3,
    ),
    Column("verdict", "verdict", 11, _verdict, sort="verdict", priority=4),
    Column(
        "attempt",
        "try",
        3,
        lambda r, c: fmt.plain(fmt.attempt_label(r, c.max_attempts)),
        sort="attempts",
        priority=5,
    ),
    Column(
        "elapsed",
        "elapsed",
        7,
        lambda r, c: Text(fmt.elapsed(r, c.now), justify="right"),
        sort="started_at",
        priority=6,
    ),
    Column("error", "error", 18, _error, sort="error_class", priority=1),
    Column("show", "show", 17, lambda r, c: fmt.plain(r.get("show")), sort="show", priority=7),
    Column("title", "title", 28, lambda r, c: fmt.plain(r.get("title")), sort="title", priority=8),
)

CLIP_COLUMNS = (
    Column("id", "clip", 7, _clip_id, sort="id", priority=0),
    Column("status", "status", 18, _status, sort="status", priority=0),
    Column("stage", "stage", 10, lambda r, c: fmt.plain(fmt.current_stage(r)), sort="stage", priority=2),
    Column(
        "progress",
        "%",
        4,
        lambda r, c: Text(fmt.progress_label(r), justify="right"),
        sort="progress",
        priority=3,
    ),
    Column(
        "attempt",
        "try",
        3,
        lambda r, c: fmt.plain(fmt.attempt_label(r, c.max_attempts)),
        sort="attempts",
        priority=5,
    ),
    Column("verdict", "verdict", 11, _verdict, sort="verdict", priority=4),
    Column("error", "error", 18, _error, sort="error_class", priority=1),
    Column("parent", "episode", 34, lambda r, c: fmt.plain(r.get("parent_id")), sort="parent_id", priority=6),
)

PADDING = 2  # cell_padding=1 on each side of every column
MARK_WIDTH = 1 + PADDING


def fit_columns(columns: tuple[Column, ...], width: int) -> tuple[Column, ...]:
    """The columns that fit `width` cells, most important first (status, then error, stage, ...), shown in
    their usual order; the room left over widens the id up to its `widest`. 80 columns keep id, status,
    stage and error: a failed row shows its class."""
    room = width - MARK_WIDTH
    chosen: set[str] = set()
    for column in sorted(columns, key=lambda c: c.priority):  # stable: equal priorities keep their order
        if column.width + PADDING <= room:
            chosen.add(column.key)
            room -= column.width + PADDING
    fitted = []
    for column in columns:
        if column.key not in chosen:
            continue
        if column.widest and room > 0:
            grown = min(column.widest, column.width + room)
            room -= grown - column.width
            column = replace(column, width=grown, render=_id(grown))
        fitted.append(column)
    return tuple(fitted)


MARK = "●"


def cursor_target(order: list[str], pending: str | None, keep_id: str | None, keep_index: int) -> int:
    """Where the cursor lands when a window of `order` arrives: the poll worker uses the same rule to
    read the detail and clips of the row it will land on in the same read, not in a second one."""
    if pending == "first":
        return 0
    if pending == "last":
        return len(order) - 1
    if pending == "keep" or keep_id not in order:
        return min(max(keep_index, 0), len(order) - 1)
    return order.index(keep_id)


class ItemTable(DataTable):
    """One window of episodes or clips, keyed by item id."""

    DEFAULT_CSS = """
    ItemTable {
        height: 1fr;
        border: none;
        scrollbar-size-vertical: 0;
        scrollbar-size-horizontal: 0;
    }
    ItemTable:focus {
        background-tint: $foreground 3%;
    }
    ItemTable > .datatable--header {
        text-style: bold;
        color: $text-muted;
    }
    """

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, id="table.down"),
        Binding("k", "cursor_up", "Up", show=False, id="table.up"),
        Binding("g,home", "first", "First row", show=False, id="table.first"),
        Binding("G,end", "last", "Last row", show=False, id="table.last"),
        Binding("o", "sort_next", "Sort", show=False, id="table.sort", tooltip="Sort by the next column"),
        Binding(
            "O",
            "sort_reverse",
            "Reverse sort",
            show=False,
            id="table.sort_reverse",
            tooltip="Reverse the sort",
        ),
    ]

    class SortRequested(Message):
        """The sort changed (a key or a header click): the screen reads the window from the top."""

        def __init__(self, table: ItemTable) -> None:
            super().__init__()
            self.table = table

        @property
        def control(self) -> ItemTable:
            return self.table

    class WindowRequested(Message):
        """The cursor went past the window's edge: the screen should read `offset` next."""

        def __init__(self, table: ItemTable, offset: int, cursor: str) -> None:
            super().__init__()
            self.table = table
            self.offset = offset
            self.cursor = cursor  # keep | first | last

        @property
        def control(self) -> ItemTable:
            return self.table

    def __init__(self, columns: tuple[Column, ...], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, cell_padding=1)
        self.all_columns = columns
        self.item_columns = columns  # the ones shown: fit_columns() picks them by width on every resize
        self.window_offset = 0
        self.total = 0
        self.counting = False  # the rows came before their count (a free-text filter being counted)
        self.rows_by_id: dict[str, dict] = {}
        self.order: list[str] = []
        self.pending_cursor: str | None = None
        self.requested_offset: int | None = None  # a slide asked for but not read yet
        self._cells: dict[str, list[tuple]] = {}
        self._title: str | None = None
        self.sort_by = "id"  # kept in the view, done in SQL: 100k rows are never in memory
        self.sort_descending = False
        self._shown_with: tuple[RenderContext, set[str]] | None = (
            None  # the last window's context, for a refit
        )
        # Cells rendered by what they show (text and styles), not by where they are: see _render_cell.
        self._cells_by_look: LRUCache[tuple, list[list[Segment]]] = LRUCache(4096)
        self._looks_theme: str | None = None

    def on_mount(self) -> None:
        self._fit(self.size.width or self.app.size.width)

    def notify_style_update(self) -> None:
        # Every look is keyed by the styles it was drawn with, so a focus change (:focus tints the table)
        # finds the looks drawn under either tint; after a theme change the old ones are dropped.
        if self._looks_theme != self.app.theme:
            self._looks_theme = self.app.theme
            self._cells_by_look.clear()
        super().notify_style_update()

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> list[list[Segment]]:
        """A cell's segments, from a cache keyed by what the cell shows and how it is styled.

        DataTable caches a cell's render under a counter that every add_row, remove_row, update_cell and
        sort bumps, so one changed countdown, one row sliding in or one focus change renders every cell
        of the window again through Rich (about 0.2 ms a cell: 25 ms for a 11x11 window, most of a window
        slide). Most cells look like cells already drawn ("✓ done", "100%", a stage): here they are
        rendered once per look, and only the mouse metadata (row, column) is put on for their place."""
        if row_index < 0 or column_index < 0 or self.fixed_rows or self.fixed_columns:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        row = self.rows.get(row_key) if row_key is not None else None
        cells = self._get_row_renderables(row_index).cells
        cell = cells[column_index] if column_index < len(cells) else None
        if row is None or row.height != 1 or not isinstance(cell, Text):
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        component_style, post_style = self._get_styles_to_render_cell(
            False,
            False,
            False,
            hover,
            cursor,
            self.show_cursor,
            self._show_hover_cursor,
            self.cursor_foreground_priority == "css",
            self.cursor_background_priority == "css",
        )
        key = (*_signature(cell), width, base_style, component_style, post_style, self.cell_padding)
        lines = self._cells_by_look.get(key)
        if lines is None:
            options = self.app.console_options.update_dimensions(width, 1).update(no_wrap=True)
            lines = self.app.console.render_lines(
                Styled(
                    Padding(cell, (0, self.cell_padding)),
                    pre_style=base_style + component_style,
                    post_style=post_style,
                ),
                options,
            )
            self._cells_by_look[key] = lines
        meta = Style.from_meta({"row": row_index, "column": column_index})
        return [
            [Segment(text, None if style is None else style + meta, control) for text, style, control in line]
            for line in lines
        ]

    def on_resize(self) -> None:
        self._fit(self.size.width)

    def _fit(self, width: int) -> None:
        """Choose the columns for `width`; when the choice changed (a resize from 120 to 80 columns), put
        the columns back and re-add the window's rows: the rows are in memory, nothing is read."""
        fitted = fit_columns(self.all_columns, width)
        shape = [(c.key, c.width) for c in fitted]
        if self.columns and shape == [(c.key, c.width) for c in self.item_columns]:
            return
        self.item_columns = fitted
        keep_id, rows = self.current_id, [self.rows_by_id[i] for i in self.order]
        self.clear(columns=True)
        self.add_column(" ", width=1, key="mark")
        for column in fitted:
            self.add_column(column.label, width=column.width, key=column.key)
        self._cells, self.order, self.rows_by_id = {}, [], {}
        if rows and self._shown_with is not None:
            ctx, marked = self._shown_with
            self.show_window(rows, self.window_offset, self.total, ctx, marked)
            if keep_id in self.order:
                self.move_cursor(row=self.order.index(keep_id), animate=False, scroll=False)

    @property
    def hidden_keys(self) -> frozenset[str]:
        shown = {c.key for c in self.item_columns}
        return frozenset(c.key for c in self.all_columns if c.key not in shown)

    @property
    def sort_columns(self) -> list[Column]:
        return [c for c in self.all_columns if c.sort]

    @property
    def sort_label(self) -> str:
        """'' for the natural order (id ascending), else what the title says: 'by show ↓'."""
        if self.sort_by == "id" and not self.sort_descending:
            return ""
        column = next((c for c in self.sort_columns if c.sort == self.sort_by), None)
        return f"by {column.label if column else self.sort_by} {'↓' if self.sort_descending else '↑'}"

    def sort_on(self, sort: str, descending: bool) -> None:
        if (sort, descending) == (self.sort_by, self.sort_descending):
            return
        self.sort_by, self.sort_descending = sort, descending
        self.pending_cursor = "first"
        self.post_message(self.SortRequested(self))

    def action_sort_next(self) -> None:
        keys = [c.sort for c in self.sort_columns]
        following = keys[(keys.index(self.sort_by) + 1) % len(keys)] if self.sort_by in keys else keys[0]
        self.sort_on(following, False)

    def action_sort_reverse(self) -> None:
        self.sort_on(self.sort_by, not self.sort_descending)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """A click on a header sorts by it; a second click reverses."""
        event.stop()
        column = next((c for c in self.item_columns if c.key == event.column_key.value), None)
        if column is None or not column.sort:
            return
        self.sort_on(column.sort, not self.sort_descending if column.sort == self.sort_by else False)

    @property
    def window_size(self) -> int:
        """How many rows fit; the screen asks for exactly this many."""
        return max(1, self.size.height - (1 if self.show_header else 0))

    @property
    def current_id(self) -> str | None:
        if not self.order or self.cursor_row < 0 or self.cursor_row >= len(self.order):
            return None
        return self.order[self.cursor_row]

    @property
    def current_row(self) -> dict | None:
        item_id = self.current_id
        return self.rows_by_id.get(item_id) if item_id else None

    @property
    def position_label(self) -> str:
        if not self.total:
            return "none"
        first = self.window_offset + 1
        if self.counting:
            return f"{first}-{self.window_offset + len(self.order)}, counting"
        return f"{first}-{self.window_offset + len(self.order)} of {self.total}"

    def show_title(self, text: str) -> None:
        """Set the border title, literally (a filter may hold brackets), and only when it changed:
        Textual repaints the whole table on every assignment, a few times a second for nothing."""
        if text != self._title:
            self._title = text
            self.border_title = Content(one_line(text))

    def show_window(
        self,
        rows: list[dict],
        offset: int,
        total: int,
        ctx: RenderContext,
        marked: set[str],
        counting: bool = False,
    ) -> None:
        """Bring the table to exactly `rows`, changing only the cells that changed. `counting`: the
        rows came before their count, and `total` is only how many are known so far."""
        self._shown_with = (ctx, marked)
        ctx = replace(ctx, hidden=self.hidden_keys)
        keep_id = self.current_id
        keep_index = self.cursor_row
        new_order = [r["id"] for r in rows]
        incoming = set(new_order)
        keys = ["mark", *(c.key for c in self.item_columns)]
        with self.app.batch_update():
            for item_id in [i for i in self.order if i not in incoming]:
                self.remove_row(item_id)
                self._cells.pop(item_id, None)
            for row in rows:
                item_id = row["id"]
                cells = [RowMark(item_id, item_id in marked)] + [
                    c.render(row, ctx) for c in self.item_columns
                ]
                signature = [_signature(cell) for cell in cells]
                before = self._cells.get(item_id)
                if before is None:
                    self.add_row(*cells, key=item_id)
                else:
                    for key, cell, new, old in zip(keys, cells, signature, before):
                        if new != old:
                            self.update_cell(item_id, key, cell)
                self._cells[item_id] = signature
            kept = [i for i in self.order if i in incoming]
            if kept + [i for i in new_order if i not in set(kept)] != new_order:
                position = {item_id: n for n, item_id in enumerate(new_order)}
                self.sort("mark", key=lambda mark: position.get(mark.item_id, 0))
            self.rows_by_id = {r["id"]: r for r in rows}
            self.order = new_order
            if self.requested_offset is not None and (
                offset == self.requested_offset or (not counting and offset + len(rows) >= total)
            ):
                self.requested_offset = None  # the slide arrived (or was clamped at an end)
            self.window_offset = offset
            self.total = total
            self.counting = counting
            self._place_cursor(keep_id, keep_index)

    def _place_cursor(self, keep_id: str | None, keep_index: int) -> None:
        if not self.order:
            return
        target = cursor_target(self.order, self.pending_cursor, keep_id, keep_index)
        self.pending_cursor = None
        if target != self.cursor_row:
            self.move_cursor(row=target, animate=False, scroll=False)

    def restyle(self, ctx: RenderContext, marked: set[str]) -> None:
        """Re-render every row (after a theme change or a mark toggle)."""
        rows = [self.rows_by_id[i] for i in self.order]
        self._cells = {i: [()] * (len(self.item_columns) + 1) for i in self._cells}
        self.show_window(rows, self.window_offset, self.total, ctx, marked, self.counting)

    @property
    def target_offset(self) -> int:
        """Where the window is going: key presses during a read add up instead of getting lost."""
        return self.window_offset if self.requested_offset is None else self.requested_offset

    def _request(self, offset: int, cursor: str) -> None:
        # While the count is on its way the end is not known: the read clamps the offset instead.
        offset = max(0, offset if self.counting else min(offset, self.total - self.window_size))
        self.requested_offset = offset
        self.post_message(self.WindowRequested(self, offset, cursor))

    def _more_below(self) -> bool:
        if self.counting:
            return len(self.order) >= self.window_size
        return self.target_offset + len(self.order) < self.total

    def action_cursor_down(self) -> None:
        if self.cursor_row >= len(self.order) - 1 and self._more_below():
            self._request(self.target_offset + 1, "keep")
        else:
            super().action_cursor_down()

    def action_cursor_up(self) -> None:
        if self.cursor_row <= 0 and self.target_offset > 0:
            self._request(self.target_offset - 1, "keep")
        else:
            super().action_cursor_up()

    def action_page_down(self) -> None:
        if self._more_below():
            self._request(self.target_offset + self.window_size, "keep")
        else:
            self.move_cursor(row=len(self.order) - 1, animate=False)

    def action_page_up(self) -> None:
        if self.target_offset > 0:
            self._request(self.target_offset - self.window_size, "keep")
        else:
            self.move_cursor(row=0, animate=False)

    def action_first(self) -> None:
        if self.target_offset:
            self._request(0, "first")
        else:
            self.move_cursor(row=0, animate=False)

    def action_last(self) -> None:
        if self._more_below():
            self._request(END if self.counting else self.total - self.window_size, "last")
        else:
            self.move_cursor(row=len(self.order) - 1, animate=False)


class RowMark(Text):
    """The mark column's cell; it also carries the row's item id so rows can be put in window order."""

    def __init__(self, item_id: str, marked: bool) -> None:
        super().__init__(MARK if marked else " ", no_wrap=True, end="")
        self.item_id = item_id


def _signature(cell: Text) -> tuple:
    return (
        cell.plain,
        str(cell.style),
        tuple(cell.spans),
        cell.justify,
        cell.overflow,
        cell.no_wrap,
        cell.end,
    )
