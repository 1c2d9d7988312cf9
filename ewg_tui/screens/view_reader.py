"""The poll worker's read: only what the main screen shows, windowed and filtered in SQL.

Runs on a worker thread; touches no widget. The request is an immutable copy
of the screen's view state taken on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from engine import pipeline
from engine.db import Readable, queries
from engine.db.queries import ItemFilter

from ..messages import ViewData
from ..widgets.item_table import cursor_target

DETAIL_ATTEMPTS = 8


@dataclass(frozen=True)
class ViewRequest:
    generation: int
    episode_filter: ItemFilter
    episode_offset: int
    episode_limit: int
    episode_id: str | None
    clip_filter: ItemFilter
    clip_offset: int
    clip_limit: int
    detail_id: str | None
    sort: str = "id"
    descending: bool = False
    clip_sort: str = "id"
    clip_descending: bool = False
    with_overview: bool = True
    followed: tuple[tuple[str, float], ...] = field(default=())
    # Where the episode cursor will land (pending, keep_id, keep_index) when the detail and clips follow
    # it; the read then resolves episode_id and detail_id itself from the rows it reads.
    episode_cursor: tuple[str | None, str | None, int] | None = None
    all_clips: bool = False
    show_discarded: bool = False  # dead letters shown too (the `d` toggle)
    # A free-text filter that narrows the one shown: no match has an id before this (its first row).
    text_start: str | None = None


def clamp_offset(offset: int, limit: int, total: int) -> int:
    return max(0, min(offset, total - limit))


def read_view(
    store: Readable, request: ViewRequest, now: float, shown: Callable[[ViewData], None] | None = None
) -> ViewData:
    """Everything the main screen shows. `shown`, when given, gets the rows of a new free-text
    filter before their count (ViewData.counting): counting reads every row, and the operator
    sees the matches as soon as they are found; the returned ViewData has the count."""
    flt = request.episode_filter
    total: int | None = None
    first: ViewData | None = None  # the rows shown before their count, with their clips and detail
    episodes: list[dict] = []
    offset = request.episode_offset
    if flt.text and shown is not None and offset == 0 and request.episode_limit:
        episodes, total = queries.text_window_head(
            store, flt, request.sort, request.descending, request.episode_limit, request.text_start
        )
        if total is None:  # the count is the slow part: show the rows first
            first = _view(store, request, now, episodes, 0, len(episodes), counting=True)
            shown(first)
    if total is None:
        total = queries.count_items(store, flt)
        offset = clamp_offset(offset, request.episode_limit, total)
        if not (request.episode_limit and total):
            episodes = []
        elif offset or not episodes:
            # The count tells a free-text window how dense its matches are, so it can pick its plan.
            episodes = queries.item_window(
                store,
                flt,
                request.sort,
                request.descending,
                offset,
                request.episode_limit,
                matches=total if flt.text else None,
            )
    if first is not None and episodes is first.episodes:  # the same rows: their clips and detail too
        data = replace(first, episode_total=total, counting=False, follow_ups={})
    else:
        data = _view(store, request, now, episodes, offset, total)
    if request.with_overview:
        data.overview = queries.overview(store, now)
        data.counts = queries.counts(store)
    for item_id, since in request.followed:
        outcome = queries.follow_up(store, item_id, since)
        if outcome != "pending":
            data.follow_ups[item_id] = outcome
    return data


def _view(
    store: Readable,
    request: ViewRequest,
    now: float,
    episodes: list[dict],
    episode_offset: int,
    episode_total: int,
    counting: bool = False,
) -> ViewData:
    """The episode window with what follows the cursor: the clips and detail of its episode."""
    clip_filter, detail_id, episode_id = request.clip_filter, request.detail_id, request.episode_id
    if request.episode_cursor is not None and episodes:
        pending, keep_id, keep_index = request.episode_cursor
        episode_id = episodes[cursor_target([r["id"] for r in episodes], pending, keep_id, keep_index)]["id"]
        detail_id = episode_id
        clip_filter = clip_filter_for(episode_id, request.all_clips, request.show_discarded)
    clip_total = queries.count_items(store, clip_filter)
    clip_offset = clamp_offset(request.clip_offset, request.clip_limit, clip_total)
    clips = (
        queries.item_window(
            store, clip_filter, request.clip_sort, request.clip_descending, clip_offset, request.clip_limit
        )
        if request.clip_limit
        else []
    )
    detail = queries.item(store, detail_id) if detail_id else None
    detail_attempts = queries.attempts(store, detail_id)[-DETAIL_ATTEMPTS:] if detail else []
    return ViewData(
        request.generation,
        now,
        episodes,
        episode_offset,
        episode_total,
        clips,
        clip_offset,
        clip_total,
        detail_id,
        detail,
        detail_attempts,
        episode_id=episode_id,
        counting=counting,
        episode_filter=request.episode_filter,
        episode_order=(request.sort, request.descending),
    )


def clip_filter_for(episode_id: str | None, all_clips: bool, show_discarded: bool = False) -> ItemFilter:
    if all_clips:
        return ItemFilter(kind=pipeline.CLIP, show_discarded=show_discarded)
    return ItemFilter(kind=pipeline.CLIP, parent_id=episode_id or "\0none", show_discarded=show_discarded)
