"""The read side: what `ewg status/failures/metrics/log` print and the console shows.

Reads only; windowed, filtered and sorted in SQL so 100k items cost the same
as 100. Every function takes the Store (or a Reader of its own) and returns plain dicts
and lists, with the same values from either database.

The SQL is the portable subset both SQLite and PostgreSQL accept: `?` placeholders only,
explicit NULLS FIRST/LAST where NULLs sort, booleans compared with TRUE/FALSE and turned into
Python bools here. What differs comes from the reader's dialect (engine/db/dialect.py; SQLite's
when the reader names none): the free-text scan hint and the case-insensitive LIKE.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from .. import errors, pipeline
from .dialect import SQLITE, Dialect
from .types import RUNNING, Readable

ITEM_FIELDS = (
    "id",
    "kind",
    "parent_id",
    "show",
    "title",
    "stage",
    "next_stage",
    "status",
    "progress",
    "progress_message",
    "attempts",
    "next_attempt_at",
    "verdict",
    "error_class",
    "error_message",
    "started_at",
    "updated_at",
    "blocked_reason",
    "lease_owner",
    "clip_start",
    "clip_end",
)
SORTABLE = {
    "id",
    "show",
    "title",
    "stage",
    "status",
    "progress",
    "attempts",
    "updated_at",
    "error_class",
    "verdict",
    "started_at",
    "parent_id",
}
# Columns that may be NULL: SQLite sorts NULLs first ascending, PostgreSQL last, so their sorts say
# which (NULLS FIRST ascending, NULLS LAST descending: SQLite's own order, which its indexes serve).
NULLABLE_SORTS = {"parent_id", "stage", "error_class", "verdict", "started_at"}
STATUSES = ("queued", "running", "retrying", "blocked", "failed", "stopped", "done")
DISCARDED = "discarded"  # dead letters: hidden from lists and counts unless asked for (`status:discarded`)


@dataclass
class ItemFilter:
    """What the operator asked to see; every part is applied in SQL."""

    kind: str = pipeline.EPISODE
    statuses: tuple[str, ...] = ()
    stage: str | None = None
    show: str | None = None
    text: str = ""
    parent_id: str | None = None
    ids: tuple[str, ...] = ()
    stuck_only: bool = False
    show_discarded: bool = False  # dead letters are hidden unless asked for (or named in `statuses`)

    def where(self, dialect: Dialect = SQLITE) -> tuple[str, list[Any]]:
        clauses, params = ["kind=?"], [self.kind]
        like = dialect.nocase_like.format
        if self.statuses:
            clauses.append(f"status IN ({','.join('?' * len(self.statuses))})")
            params += list(self.statuses)
        elif not self.show_discarded:
            clauses.append("status <> 'discarded'")
        if self.stage:
            clauses.append("(stage=? OR next_stage=?)")
            params += [self.stage, self.stage]
        if self.show:  # case-insensitive on both databases (PostgreSQL's LIKE is not)
            clauses.append(like(column="show"))
            params.append(contains(self.show))
        if self.text:
            clauses.append(f"({' OR '.join(like(column=c) for c in ('id', 'title', 'error_message'))})")
            params += [contains(self.text)] * 3
        if self.parent_id:
            clauses.append("parent_id=?")
            params.append(self.parent_id)
        if self.ids:
            clauses.append(f"id IN ({','.join('?' * len(self.ids))})")
            params += list(self.ids)
        if self.stuck_only:
            clauses.append("verdict IS NOT NULL")
        return " AND ".join(clauses), params


def contains(text: str) -> str:
    """A LIKE pattern (ESCAPE '\\') matching `text` anywhere, its own `%`, `_` and `\\` taken literally."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _rows(store: Readable, sql: str, params=()) -> list[dict]:
    return [dict(r) for r in store.read(sql, params)]


def _dialect(store: Readable) -> Dialect:
    return getattr(store, "dialect", SQLITE)


def _source(store: Readable, flt: ItemFilter, walk_index: bool = False) -> str:
    # A free-text search reads every row anyway; on SQLite walking an index first and then each row
    # costs about 3x more per row, unless the matches are dense enough that the walk stops early
    # (item_window). PostgreSQL's planner has statistics to judge that itself.
    return "items" + _dialect(store).scan_items if flt.text and not walk_index else "items"


def _hiding_needed(store: Readable, flt: ItemFilter) -> ItemFilter:
    """The filter without `status <> 'discarded'` when no item of its kind is discarded (a lookup on
    ix_items_kind_status). That clause makes SQLite read the row behind every entry its walk of
    ix_items_kind_id passes, the status not being in that index: a window 100k deep cost 48 ms with
    it against 4 ms without, an unfiltered count 6 ms against 4."""
    if flt.statuses or flt.show_discarded:
        return flt
    if store.read_one("SELECT 1 FROM items WHERE kind=? AND status=? LIMIT 1", [flt.kind, DISCARDED]):
        return flt
    return replace(flt, show_discarded=True)  # nothing to hide: the same rows


def _order_by(sort: str, descending: bool) -> str:
    """A window's ORDER BY: the column, NULLs where SQLite puts them, then id to break ties."""
    if sort not in SORTABLE:
        raise ValueError(f"cannot sort by {sort!r}; choose one of {', '.join(sorted(SORTABLE))}")
    direction = "DESC" if descending else "ASC"
    nulls = (" NULLS LAST" if descending else " NULLS FIRST") if sort in NULLABLE_SORTS else ""
    return f"ORDER BY {sort} {direction}{nulls}" + (f", id {direction}" if sort != "id" else "")


def count_items(store: Readable, flt: ItemFilter) -> int:
    where, params = _hiding_needed(store, flt).where(_dialect(store))
    return store.read_one(f"SELECT COUNT(*) FROM {_source(store, flt)} WHERE {where}", params)[0]


def item_window(
    store: Readable,
    flt: ItemFilter,
    sort: str = "id",
    descending: bool = False,
    offset: int = 0,
    limit: int = 100,
    matches: int | None = None,
) -> list[dict]:
    """One screenful of items, in order; the console asks only for what it shows.

    `matches` (the count of a free-text filter, when known) picks how to find the window: when
    matches are dense, walking the id index in order finds `offset + limit` of them after a small
    part of the table ("n" in 100k titles: 0.1 ms); when they are sparse, one scan with a bounded
    sort is cheaper than walking the whole index and reading each row (25 ms against 75 ms).
    """
    order = _order_by(sort, descending)
    where, params = _hiding_needed(store, flt).where(_dialect(store))
    walk = sort == "id" and matches is not None and matches > 3 * (offset + limit)
    # Page over ids on a covering index first, then read the full rows of that page only: OFFSET then
    # skips index entries, not whole rows, so a window at 100k costs what one at 0 does.
    return _rows(
        store,
        f"SELECT {', '.join(ITEM_FIELDS)} FROM items WHERE id IN"
        f" (SELECT id FROM {_source(store, flt, walk)} WHERE {where} {order} LIMIT ? OFFSET ?) {order}",
        [*params, int(limit), int(offset)],
    )


TEXT_PROBE = 1000  # rows a free-text window's first look reads, in order, before it scans
TEXT_CAP = 2000  # matches a free-text scan keeps: fewer, and the scan counted them too


def text_window_head(
    store: Readable,
    flt: ItemFilter,
    sort: str = "id",
    descending: bool = False,
    limit: int = 100,
    start: str | None = None,
) -> tuple[list[dict], int | None]:
    """The first window of a free-text filter without its count, and the count when it came free.

    Counting a free-text filter reads every row (45 ms at 100k with the cores busy), and the
    console shows the rows first and the total when it follows. Two looks, the cheaper first:
    the first TEXT_PROBE rows in the window's order (when it is the id order) hold the window
    when matches are dense (one letter typed: ~1 ms); otherwise one scan keeps the first TEXT_CAP
    matches in order, and when fewer match, that scan was the count as well.

    `start` (ascending id order only): no match has a smaller id. A letter typed onto a filter
    narrows it, so its first match is at or after the first match of the filter it extends; the
    first look then reads from there (matches clustered in one show are found past the rows of
    the shows before it).
    """
    order = _order_by(sort, descending)
    flt = _hiding_needed(store, flt)
    where, params = flt.where(_dialect(store))
    fields = ", ".join(ITEM_FIELDS)
    if sort == "id":
        since, since_params = ("AND id >= ? ", [start]) if start is not None and not descending else ("", [])
        # The inner LIMIT keeps both databases from pushing the filter into the walk.
        rows = _rows(
            store,
            f"SELECT {fields} FROM items WHERE id IN (SELECT id FROM (SELECT * FROM items WHERE kind=? {since}"
            f"{order} LIMIT ?) AS head WHERE {where} {order} LIMIT ?) {order}",
            [flt.kind, *since_params, TEXT_PROBE, *params, int(limit)],
        )
        if len(rows) >= limit:
            return rows, None
    cap = max(TEXT_CAP, int(limit))
    ids = [
        r[0]
        for r in store.read(
            f"SELECT id FROM {_source(store, flt)} WHERE {where} {order} LIMIT ?", [*params, cap]
        )
    ]
    total = len(ids) if len(ids) < cap else None
    page = ids[: int(limit)]
    if not page:
        return [], total
    rows = _rows(store, f"SELECT {fields} FROM items WHERE id IN ({','.join('?' * len(page))}) {order}", page)
    return rows, total


def counts(store: Readable) -> dict:
    """{kind: {"by_status": {...}, "by_stage": {stage: {done, in_flight, failed, waiting}}, "total": n}}"""
    out: dict[str, Any] = {}
    for kind in pipeline.KINDS:
        out[kind] = {
            "total": 0,
            "discarded": 0,  # dead letters: not in total, by_status or by_stage
            "by_status": {s: 0 for s in STATUSES},
            "by_stage": {
                s: {"done": 0, "in_flight": 0, "failed": 0, "waiting": 0} for s in pipeline.stages_of(kind)
            },
        }
    for r in store.read(
        "SELECT kind, stage, next_stage, status, COUNT(*) AS n FROM items"
        " GROUP BY kind, stage, next_stage, status"
    ):
        kind, n = r["kind"], r["n"]
        entry = out[kind]
        if r["status"] == DISCARDED:
            entry["discarded"] += n
            continue
        entry["total"] += n
        entry["by_status"][r["status"]] = entry["by_status"].get(r["status"], 0) + n
        # every stage up to `stage` is done; the next stage is in flight, failed or waiting
        for s in pipeline.stages_of(kind)[: pipeline.stage_index(kind, r["stage"]) + 1]:
            entry["by_stage"][s]["done"] += n
        if r["next_stage"]:
            bucket = {"running": "in_flight", "failed": "failed"}.get(r["status"], "waiting")
            entry["by_stage"][r["next_stage"]][bucket] += n
    return out


def status(store: Readable, include_discarded: bool = False) -> dict:
    """The `ewg status --json` document: {"episodes": [...], "clips": [...], "counts": {...}}.
    Discarded items (dead letters) are left out unless `include_discarded`."""
    fields = (
        "id, kind, parent_id, show, title, stage, next_stage, status, attempts, verdict, error_class,"
        " error_message, progress, next_attempt_at, blocked_reason"
    )
    hide = "" if include_discarded else " WHERE status <> 'discarded'"
    items = _rows(store, f"SELECT {fields} FROM items{hide} ORDER BY kind DESC, id")
    return {
        "episodes": [i for i in items if i["kind"] == pipeline.EPISODE],
        "clips": [i for i in items if i["kind"] == pipeline.CLIP],
        "counts": counts(store),
    }


def failure_groups(store: Readable) -> list[dict]:
    """Failed items grouped by fingerprint (stage + error class + normalized message), largest first."""
    groups: dict[str, dict] = {}
    for r in store.read(
        "SELECT id, kind, source, next_stage, error_class, error_message, error_at, error_suggestion"
        " FROM items WHERE status='failed' ORDER BY id"
    ):
        fp = errors.fingerprint(
            r["next_stage"], r["error_class"], r["error_message"], item_id=r["id"], source=r["source"]
        )
        g = groups.setdefault(
            fp,
            {
                "fingerprint": fp,
                "stage": r["next_stage"],
                "kind": r["kind"],
                "error_class": r["error_class"],
                "message": r["error_message"],
                "suggestion": r["error_suggestion"],
                "count": 0,
                "first_seen": None,
                "last_seen": None,
                "ids": [],
            },
        )
        g["count"] += 1
        g["ids"].append(r["id"])
        at = r["error_at"]
        if at is not None:
            g["first_seen"] = at if g["first_seen"] is None else min(g["first_seen"], at)
            g["last_seen"] = at if g["last_seen"] is None else max(g["last_seen"], at)
    return sorted(groups.values(), key=lambda g: (-g["count"], g["fingerprint"]))


def metrics(store: Readable, since: float | None = None) -> dict:
    """Recovery metrics (the original description's section 8), over attempts ended since `since`."""
    attempts = store.read(
        "SELECT a.item_id, a.stage, a.outcome, a.error_class, a.started_at, a.ended_at,"
        " i.kind FROM attempts a JOIN items i ON i.id = a.item_id"
        " WHERE a.ended_at IS NOT NULL AND a.ended_at >= ? ORDER BY a.id",
        (float("-inf") if since is None else since,),
    )
    bad = set(RECOVERY_FAILURES)
    first_failure: dict[tuple[str, str], float] = {}
    recovered: dict[tuple[str, str], float] = {}
    points: Counter = Counter()
    for a in attempts:
        key = (a["item_id"], a["stage"])
        if a["outcome"] in bad:
            first_failure.setdefault(key, a["ended_at"])
            points[(a["kind"], a["stage"], a["error_class"] or a["outcome"])] += 1
        elif a["outcome"] == "succeeded" and key in first_failure and key not in recovered:
            recovered[key] = a["ended_at"] - first_failure[key]
    times = list(recovered.values())
    failed_keys = len(first_failure)
    effectiveness = action_effectiveness(store, since)
    return {
        "failures": failed_keys,
        "recovered": len(recovered),
        "recovery_success_rate": (len(recovered) / failed_keys) if failed_keys else None,
        "time_to_recovery_s": {
            "median": statistics.median(times) if times else None,
            "mean": statistics.fmean(times) if times else None,
            "max": max(times) if times else None,
        },
        "top_failure_points": [
            {"kind": k, "stage": s, "error_class": c, "count": n} for (k, s, c), n in points.most_common(10)
        ],
        "action_effectiveness": effectiveness,
    }


RECOVERY_VERBS = (
    "retry",
    "resume",
    "reprocess",
    "reset",
    "skip",
    "rollback",
    "clear_cache",
    "extend",
    "rerender_clips",
    "delete_and_retry_clips",
    "regenerate_all_clips",
    "clean_and_retry_clips",
)


def action_effectiveness(store: Readable, since: float | None = None) -> list[dict]:
    """Per verb (used since `since`): how many affected items then succeeded, failed again, or are pending."""
    events = store.read(
        f"SELECT id, at, verb, affected FROM events WHERE verb IN "
        f"({','.join('?' * len(RECOVERY_VERBS))}) AND at >= ? ORDER BY id",
        (*RECOVERY_VERBS, float("-inf") if since is None else since),
    )
    per_verb: dict[str, Counter] = defaultdict(Counter)
    for e in events:
        for item_id in json.loads(e["affected"] or "[]"):
            outcome = follow_up(store, item_id, e["at"])
            per_verb[e["verb"]][outcome] += 1
    result = []
    for verb, c in sorted(per_verb.items()):
        decided = c["succeeded"] + c["failed_again"]
        result.append(
            {
                "verb": verb,
                "items": sum(c.values()),
                "succeeded": c["succeeded"],
                "failed_again": c["failed_again"],
                "pending": c["pending"],
                "refailure_rate": (c["failed_again"] / decided) if decided else None,
            }
        )
    return result


def follow_up(store: Readable, item_id: str, since: float) -> str:
    """What happened to an item after a verb: succeeded, failed_again or pending."""
    row = store.read_one(
        "SELECT outcome FROM attempts WHERE item_id=? AND started_at>=? AND ended_at IS NOT NULL"
        " AND outcome IN ('succeeded','failed','timed_out','stalled','abandoned')"
        " ORDER BY id LIMIT 1",
        (item_id, since),
    )
    if row is None:
        return "pending"
    return "succeeded" if row["outcome"] == "succeeded" else "failed_again"


def events(store: Readable, item_id: str | None = None, limit: int = 200, since_id: int = 0) -> list[dict]:
    """The newest events after `since_id`, newest first; with `item_id`, those that affected it."""
    if not item_id:
        return _decoded(
            _rows(store, "SELECT * FROM events WHERE id>? ORDER BY id DESC LIMIT ?", (since_id, limit))
        )
    # `affected` holds the ids as JSON; LIKE finds the rows that may name it (case-insensitively on
    # SQLite, exactly on PostgreSQL) and the decoded list decides, so both answer the same.
    pattern, found, before = contains(json.dumps(item_id)), [], None
    while len(found) < limit:
        page = _decoded(
            _rows(
                store,
                "SELECT * FROM events WHERE id>?"
                + ("" if before is None else " AND id<?")
                + " AND affected LIKE ? ESCAPE '\\' ORDER BY id DESC LIMIT ?",
                (since_id, *(() if before is None else (before,)), pattern, limit),
            )
        )
        found += [r for r in page if item_id in (r["affected"] or ())]
        if len(page) < limit:
            break
        before = page[-1]["id"]
    return found[:limit]


def _decoded(rows: list[dict]) -> list[dict]:
    for r in rows:
        for k in ("affected", "before", "after"):
            r[k] = json.loads(r[k] or "null")
    return rows


_ATTEMPT_COLUMNS = (
    "id, item_id, stage, number, worker, lease_token, started_at, ended_at, outcome, error_class,"
    " error_message, error_detail, decision, log_tail, duration, spent"
)


def attempts(store: Readable, item_id: str) -> list[dict]:
    """An item's attempts, oldest first. A running attempt has no row until it ends (Store.claim_batch):
    it is read from the item's lease and comes last, with no outcome."""
    rows = _rows(
        store,
        f"SELECT * FROM (SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE item_id=?"
        " UNION ALL SELECT NULL, id, next_stage, attempts + 1, lease_owner, lease_token, started_at,"
        " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, TRUE FROM items"
        " WHERE id=? AND status='running' AND NOT EXISTS (SELECT 1 FROM attempts a"
        " WHERE a.item_id=items.id AND a.lease_token=items.lease_token)) AS t"
        " ORDER BY id IS NULL, id",
        (item_id, item_id),
    )
    for r in rows:
        r["spent"] = bool(r["spent"])  # SQLite answers 0/1
    return rows


def item(store: Readable, item_id: str) -> dict | None:
    row = store.read_one("SELECT * FROM items WHERE id=?", (item_id,))
    return dict(row) if row else None


def item_checkpoints(store: Readable, item_id: str) -> list[dict]:
    rows = _rows(store, "SELECT * FROM checkpoints WHERE item_id=? ORDER BY stage", (item_id,))
    for r in rows:
        manifest = json.loads(r["manifest"] or "{}")
        r["files"] = manifest.get("files", [])
        r["skipped"] = manifest.get("skipped", False)
        r["bytes"] = sum(f["size"] for f in r["files"])
        r["stale"] = bool(r["stale"])  # SQLite answers 0/1
    return rows


@dataclass
class Overview:
    """The header and health panel: engine processes, switches, services, health samples, throughput."""

    engines: list[dict] = field(default_factory=list)
    paused: dict | None = None
    resource_pause: str = ""
    services: list[dict] = field(default_factory=list)
    health: list[dict] = field(default_factory=list)
    executions_per_minute: int = 0
    stuck: int = 0
    db_busy_at: float | None = None  # last time a write waited past busy_timeout (a lock held elsewhere)
    db_busy_reason: str = ""  # ... and why, in the driver's words (a lock, or a server out of reach)
    warnings: list[dict] = field(default_factory=list)  # engine.forecast's early warnings


def overview(store: Readable, now: float, live_after: float = 15.0) -> Overview:
    ov = Overview()
    ov.engines = _rows(
        store,
        "SELECT * FROM engines WHERE state != 'stopped' AND heartbeat_at > ? ORDER BY owner",
        (now - live_after,),
    )
    paused = store.read_one("SELECT value, reason, actor, at FROM engine_state WHERE key='paused'")
    ov.paused = dict(paused) if paused and paused["value"] else None
    rp = store.read_one("SELECT value FROM engine_state WHERE key='resource_pause'")
    ov.resource_pause = rp["value"] if rp else ""
    ov.services = _services(_rows(store, "SELECT * FROM services ORDER BY name"))
    ov.health = list(reversed(_rows(store, "SELECT * FROM health ORDER BY at DESC LIMIT 30")))
    ov.executions_per_minute = store.read_one(
        "SELECT COUNT(*) FROM attempts WHERE ended_at > ? AND outcome='succeeded'", (now - 60,)
    )[0]
    ov.stuck = store.read_one(
        f"SELECT COUNT(*) FROM items WHERE {RUNNING} AND verdict IN ('STALLED', 'TIMED OUT')"
    )[0]  # SLOW work moves, DEAD work is being rescued
    busy = store.read_one("SELECT at, reason FROM engine_state WHERE key='db_busy'")
    ov.db_busy_at = busy["at"] if busy else None
    ov.db_busy_reason = busy["reason"] if busy else ""
    ov.warnings = early_warnings(store)
    return ov


def _services(rows: list[dict]) -> list[dict]:
    for r in rows:
        r["ok"] = bool(r["ok"])  # SQLite answers 0/1
    return rows


ALERT_VERBS = ("attempt_failed", "verdict", "resource_pause", "service_down", "early_warning")


def last_event_id(store: Readable) -> int:
    row = store.read_one("SELECT COALESCE(MAX(id), 0) FROM events")
    return int(row[0])


def alert_feed(store: Readable, after_id: int, limit: int = 500) -> list[dict]:
    """The events after `after_id` that may become alerts, each with its item's state now."""
    rows = _rows(
        store,
        "SELECT id, at, verb, selection, reason, affected, result FROM events"
        f" WHERE id > ? AND verb IN ({','.join('?' * len(ALERT_VERBS))}) ORDER BY id LIMIT ?",
        (after_id, *ALERT_VERBS, limit),
    )
    if not rows:
        return rows
    for row in rows:
        row["affected"] = json.loads(row["affected"] or "[]")
    ids = sorted({i for r in rows if r["verb"] == "attempt_failed" for i in r["affected"]})
    states: dict[str, dict] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for item in _rows(
            store,
            "SELECT id, kind, status, error_class, error_suggestion FROM items"
            f" WHERE id IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            states[item["id"]] = item
    for row in rows:
        if row["verb"] == "attempt_failed" and row["affected"]:
            item = states.get(row["affected"][0], {})
            row["item_kind"] = item.get("kind")
            row["item_status"] = item.get("status")
            row["item_error_class"] = item.get("error_class")
            row["item_suggestion"] = item.get("error_suggestion")
    return rows


@dataclass
class ForecastHistory:
    """The history engine.forecast reads, aggregated in SQL and shaped as plain mappings."""

    queued: dict[tuple[str, str], int] = field(default_factory=dict)
    output_mb: dict[tuple[str, str], float] = field(default_factory=dict)  # median checkpoint size
    outcomes: dict[tuple[str, str], list[bool]] = field(default_factory=dict)  # True = failed, oldest first
    service_downs: dict[str, int] = field(default_factory=dict)
    memory: list[tuple[float, float]] = field(default_factory=list)
    durations: dict[tuple[str, str], dict[str, list[float]]] = field(default_factory=dict)  # by host


FAILED_OUTCOMES = ("failed", "timed_out", "stalled", "abandoned", "crashed")


def forecast_history(store: Readable, since: float, per_stage: int = 100) -> ForecastHistory:
    h = ForecastHistory()
    for r in store.read(
        "SELECT kind, next_stage, COUNT(*) FROM items WHERE status IN ('queued','retrying','blocked')"
        " AND next_stage IS NOT NULL GROUP BY kind, next_stage"
    ):
        h.queued[(r[0], r[1])] = int(r[2])
    for kind, stage in h.queued:
        sizes = []
        for (manifest,) in store.read(
            "SELECT c.manifest FROM checkpoints c JOIN items i ON i.id = c.item_id"
            " WHERE i.kind = ? AND c.stage = ? AND c.stale = FALSE ORDER BY c.created_at DESC LIMIT ?",
            (kind, stage, per_stage),
        ):
            try:
                files = json.loads(manifest).get("files", [])
                sizes.append(sum(int(f.get("size", 0)) for f in files) / 2**20)
            except (ValueError, TypeError, AttributeError):
                continue  # a damaged manifest is doctor's to report; it only narrows the forecast
        if sizes:
            h.output_mb[(kind, stage)] = statistics.median(sizes)
    rows = store.read(
        "SELECT i.kind, a.stage, a.outcome, a.worker, a.duration FROM attempts a JOIN items i ON i.id = a.item_id"
        " WHERE a.ended_at >= ? ORDER BY a.id",
        (since,),
    )
    for kind, stage, outcome, worker, duration in rows:
        key = (kind, stage)
        if outcome in FAILED_OUTCOMES or outcome == "succeeded":
            h.outcomes.setdefault(key, []).append(outcome in FAILED_OUTCOMES)
        if outcome == "succeeded" and duration is not None:
            host = (worker or "").split(":", 1)[0]
            h.durations.setdefault(key, {}).setdefault(host, []).append(float(duration))
    for stage, outcomes in h.outcomes.items():
        h.outcomes[stage] = outcomes[-per_stage:]
    for name, n in store.read(
        "SELECT selection, COUNT(*) FROM events WHERE verb = 'service_down' AND at >= ? GROUP BY selection",
        (since,),
    ):
        h.service_downs[name] = int(n)
    h.memory = [
        (float(t), float(m))
        for t, m in store.read(
            "SELECT at, memory_percent FROM health WHERE at >= ? ORDER BY at", (since + 1800,)
        )
    ]
    return h


def early_warnings(store: Readable) -> list[dict]:
    """The engine's current early warnings (engine.forecast), newest assessment."""
    row = store.read_one("SELECT value FROM engine_state WHERE key = 'warnings'")
    if row is None or not row[0]:
        return []
    try:
        return list(json.loads(row[0]))
    except ValueError:
        return []


RESCUE_OUTCOMES = ("dead", "crashed")  # the owner died: the run is rescued and spends no attempt


@dataclass
class PerMinute:
    """The console's time view: counts per minute over the last `minutes`, oldest minute first."""

    start: float  # the first minute's start (UTC seconds)
    completed: list[int]  # stage runs that succeeded
    failed: list[int]  # stage runs that failed: failed, timed out, stalled, abandoned (fenced out)
    retries: list[int]  # stage runs that were a retry (attempt number > 1), whatever their outcome
    rescued: list[int]  # runs ended by a rescue (RESCUE_OUTCOMES: the owner died)


def per_minute(store: Readable, now: float, minutes: int = 60) -> PerMinute:
    """One grouped read over the attempts that ended in the window (ix_attempts_ended)."""
    end = (int(now) // 60 + 1) * 60  # the current minute is the last bucket
    start = end - minutes * 60
    out = PerMinute(start, [0] * minutes, [0] * minutes, [0] * minutes, [0] * minutes)
    # CAST(float AS INTEGER) truncates on SQLite and rounds on PostgreSQL: the CASE makes it a floor
    # on both (the WHERE keeps the offsets >= 0, where SQLite's truncation is already one).
    rows = store.read(
        "SELECT CASE WHEN CAST(offset_min AS INTEGER) > offset_min THEN CAST(offset_min AS INTEGER) - 1"
        " ELSE CAST(offset_min AS INTEGER) END AS minute, outcome, retry, COUNT(*) AS n"
        " FROM (SELECT (ended_at - ?) / 60 AS offset_min, outcome, number > 1 AS retry FROM attempts"
        " WHERE ended_at >= ? AND ended_at < ?) AS m GROUP BY 1, outcome, retry",
        (start, start, end),
    )
    for row in rows:
        minute = row["minute"]
        if not 0 <= minute < minutes:
            continue
        if row["outcome"] == "succeeded":
            out.completed[minute] += row["n"]
        elif row["outcome"] in RESCUE_OUTCOMES:
            out.rescued[minute] += row["n"]
        elif row["outcome"] in FAILED_OUTCOMES:
            out.failed[minute] += row["n"]
        if row["retry"]:
            out.retries[minute] += row["n"]
    return out


def shows(store: Readable, kind: str = "episode", limit: int = 500) -> tuple[str, ...]:
    """The shows items of `kind` belong to, for the filter's suggestions (ix_items_kind_show)."""
    rows = store.read("SELECT DISTINCT show FROM items WHERE kind=? ORDER BY show LIMIT ?", (kind, limit))
    return tuple(r["show"] for r in rows if r["show"])


# -- metrics export and the cost of recovery -------------------------------------------------------
RECOVERY_FAILURES = (
    "failed",
    "timed_out",
    "stalled",
    "abandoned",
)  # a run that failed; the stage may recover
RESCUE_OUTCOMES = ("dead", "crashed")  # the worker died: the run's work was thrown away, no attempt spent


@dataclass
class MetricsSnapshot:
    """What `/metrics` serves (engine.metrics_export), read in grouped SQL.

    `attempts` and `recoveries` cover only the attempt rows after `after_id` up to `last_id`, so
    a scraper that keeps totals reads each finished attempt once (see metrics_snapshot)."""

    after_id: int = 0
    last_id: int = 0  # the newest attempt row this read covers
    attempts: list[dict] = field(default_factory=list)  # kind, stage, outcome, error_class, count, seconds
    # (item_id, stage) pairs touched by those rows that ever failed: kind, failed_at, recovered_at (or None)
    recoveries: list[dict] = field(default_factory=list)
    items: list[dict] = field(default_factory=list)  # kind, stage (next stage; "" when done), status, count
    health: dict | None = None  # the newest health sample
    services: list[dict] = field(default_factory=list)
    engines: int = 0
    paused: bool = False
    resource_pause: bool = False
    warnings: int = 0


def _in(values: tuple[str, ...]) -> str:
    return ",".join("?" * len(values))


def metrics_snapshot(
    store: Readable, now: float, after_id: int = 0, live_after: float = 15.0
) -> MetricsSnapshot:
    """Every series of the Prometheus export: attempts ended in rows (after_id, last_id], the rest now.

    Why incremental: grouping all 275k attempts of a 100k-item workspace costs ~0.7 s (the sort of
    the GROUP BY, join or not); the rows after the last scrape cost a millisecond. The recovery
    read visits only the (item, stage) pairs those rows touch, through ix_attempts_item, and
    recomputes each pair whole (its first failure, its first success after it). Attempt rows are
    written once, when the attempt ends (contract 3), so a row read is never read again. A caller
    whose `after_id` is above the newest row (rows deleted at the top) should start again from 0."""
    snap = MetricsSnapshot(after_id=after_id)
    snap.last_id = int(store.read_one("SELECT COALESCE(MAX(id), 0) FROM attempts")[0])
    window = (after_id, snap.last_id)
    snap.attempts = [
        {"kind": r[0], "stage": r[1], "outcome": r[2], "error_class": r[3], "count": r[4], "seconds": r[5]}
        for r in store.read(
            "SELECT i.kind, a.stage, a.outcome, COALESCE(a.error_class, ''), COUNT(*),"
            " COALESCE(SUM(a.duration), 0.0) FROM attempts a JOIN items i ON i.id = a.item_id"
            " WHERE a.id > ? AND a.id <= ? AND a.ended_at IS NOT NULL GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
            window,
        )
    ]
    failures = _in(RECOVERY_FAILURES)
    if after_id:  # only the pairs the new rows touch, each read whole
        pairs = (
            "WITH touched AS (SELECT DISTINCT item_id, stage FROM attempts WHERE id > ? AND id <= ?"
            f" AND outcome IN ('succeeded', {failures})),"
            " f AS (SELECT a.item_id, a.stage, MIN(a.ended_at) AS failed_at FROM touched t"
            " JOIN attempts a ON a.item_id = t.item_id AND a.stage = t.stage"
        )
        params: tuple = (*window, *RECOVERY_FAILURES)
    else:  # the first read: every pair (a join with `touched` would only slow it down)
        pairs, params = (
            "WITH f AS (SELECT a.item_id, a.stage, MIN(a.ended_at) AS failed_at FROM attempts a",
            (),
        )
    snap.recoveries = [
        {"item_id": r[0], "kind": r[1], "stage": r[2], "failed_at": r[3], "recovered_at": r[4]}
        for r in store.read(
            pairs + f" WHERE a.id <= ? AND a.outcome IN ({failures}) AND a.ended_at IS NOT NULL"
            " GROUP BY a.item_id, a.stage)"
            " SELECT f.item_id, i.kind, f.stage, f.failed_at, (SELECT MIN(s.ended_at) FROM attempts s"
            " WHERE s.item_id = f.item_id AND s.stage = f.stage AND s.outcome = 'succeeded'"
            " AND s.id <= ? AND s.ended_at >= f.failed_at) FROM f JOIN items i ON i.id = f.item_id"
            " ORDER BY f.item_id, f.stage",
            (*params, snap.last_id, *RECOVERY_FAILURES, snap.last_id),
        )
    ]
    snap.items = [
        {"kind": r[0], "stage": r[1] or "", "status": r[2], "count": r[3]}
        for r in store.read(
            "SELECT kind, next_stage, status, COUNT(*) FROM items GROUP BY 1, 2, 3 ORDER BY 1, 2 NULLS FIRST, 3"
        )
    ]
    row = store.read_one(
        "SELECT at, cpu_percent, memory_percent, disk_free_mb, db_disk_free_mb, time_to_full_s"
        " FROM health ORDER BY at DESC LIMIT 1"
    )
    snap.health = dict(row) if row else None
    snap.services = _services(_rows(store, "SELECT name, ok, checked_at FROM services ORDER BY name"))
    snap.engines = store.read_one(
        "SELECT COUNT(*) FROM engines WHERE state NOT IN ('stopped', 'gone') AND heartbeat_at > ?",
        (now - live_after,),
    )[0]
    switches = {
        r[0]: r[1]
        for r in store.read("SELECT key, value FROM engine_state WHERE key IN ('paused', 'resource_pause')")
    }
    snap.paused = bool(switches.get("paused"))
    snap.resource_pause = bool(switches.get("resource_pause"))
    snap.warnings = len(early_warnings(store))
    return snap


PAUSE_VERBS = {"pause": ("operator", True), "unpause": ("operator", False)}
PAUSE_VERBS |= {"resource_pause": ("resource", True), "resource_resume": ("resource", False)}


def _pause_periods(store: Readable, since: float, now: float) -> dict[str, list[tuple[float, float]]]:
    """{"operator": [(start, end)], "resource": [...]} clipped to [since, now], from the switch events."""
    periods: dict[str, list[tuple[float, float]]] = {"operator": [], "resource": []}
    began: dict[str, float | None] = {"operator": None, "resource": None}
    for at, verb in store.read(
        f"SELECT at, verb FROM events WHERE verb IN ({_in(tuple(PAUSE_VERBS))}) AND at <= ? ORDER BY at, id",
        (*PAUSE_VERBS, now),
    ):
        cause, on = PAUSE_VERBS[verb]
        if on and began[cause] is None:
            began[cause] = at
        elif not on and began[cause] is not None:
            periods[cause].append((began[cause], at))
            began[cause] = None
    for cause, start in began.items():
        if start is not None:
            periods[cause].append((start, now))  # still paused
    return {
        cause: [(max(a, since), b) for a, b in spans if b > since and b > a]
        for cause, spans in periods.items()
    }


def _union_seconds(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def recovery_cost(store: Readable, since: float | None, now: float) -> dict:
    """The performance impact of recovery since `since` (None: all history kept).

    Wasted runs are attempts that failed (any RECOVERY_FAILURES outcome) and rescued runs (the
    worker died, RESCUE_OUTCOMES): their time bought nothing. Retries are attempts numbered 2 and
    up, whatever their outcome: the extra runs recovery cost. Paused time comes from the pause and
    resource-pause events; the throughput lost is the succeeded runs per second seen while not
    paused, times the paused seconds.
    """
    start = since if since is not None else float("-inf")
    rows = store.read(
        "SELECT i.kind, a.stage, a.outcome, COALESCE(a.error_class, ''), a.number > 1, COUNT(*),"
        " COALESCE(SUM(a.duration), 0.0) FROM attempts a JOIN items i ON i.id = a.item_id"
        " WHERE a.ended_at IS NOT NULL AND a.ended_at >= ? AND a.ended_at <= ?"
        " GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
        (start, now),
    )
    stages: dict[tuple[str, str], dict] = {}
    by_class: dict[tuple[str, str, str], dict] = {}
    succeeded, first_end = 0, None
    for kind, stage, outcome, error_class, retry, n, seconds in rows:
        s = stages.setdefault(
            (kind, stage),
            {
                "kind": kind,
                "stage": stage,
                "runs": 0,
                "seconds": 0.0,
                "failed_runs": 0,
                "failed_seconds": 0.0,
                "retries": 0,
                "retry_seconds": 0.0,
                "rescues": 0,
                "rescue_seconds": 0.0,
            },
        )
        s["runs"] += n
        s["seconds"] += seconds
        if retry:
            s["retries"] += n
            s["retry_seconds"] += seconds
        if outcome == "succeeded":
            succeeded += n
        wasted = outcome in RECOVERY_FAILURES or outcome in RESCUE_OUTCOMES
        if outcome in RECOVERY_FAILURES:
            s["failed_runs"] += n
            s["failed_seconds"] += seconds
        elif outcome in RESCUE_OUTCOMES:
            s["rescues"] += n
            s["rescue_seconds"] += seconds
        if wasted:
            cls = error_class or outcome
            c = by_class.setdefault(
                (kind, stage, cls),
                {"kind": kind, "stage": stage, "error_class": cls, "runs": 0, "seconds": 0.0},
            )
            c["runs"] += n
            c["seconds"] += seconds
    if since is None:
        row = store.read_one("SELECT MIN(ended_at) FROM attempts WHERE ended_at IS NOT NULL")
        first_end = row[0] if row and row[0] is not None else now
    window_start = since if since is not None else first_end
    periods = _pause_periods(store, window_start, now)
    paused = _union_seconds(periods["operator"] + periods["resource"])
    running = max(0.0, now - window_start - paused)
    rate = succeeded / running if running > 0 else None  # succeeded stage runs per second while claiming
    totals = {
        key: sum(s[key] for s in stages.values())
        for key in (
            "runs",
            "seconds",
            "failed_runs",
            "failed_seconds",
            "retries",
            "retry_seconds",
            "rescues",
            "rescue_seconds",
        )
    }
    wasted_seconds = totals["failed_seconds"] + totals["rescue_seconds"]
    totals["wasted_share"] = wasted_seconds / totals["seconds"] if totals["seconds"] else None
    return {
        "since": since,
        "until": now,
        "totals": totals,
        "stages": sorted(
            stages.values(),
            key=lambda s: (-(s["failed_seconds"] + s["rescue_seconds"]), s["kind"], s["stage"]),
        ),
        "by_error_class": sorted(
            by_class.values(), key=lambda c: (-c["seconds"], -c["runs"], c["error_class"])
        ),
        "paused": {
            "seconds": paused,
            "operator_seconds": _union_seconds(periods["operator"]),
            "resource_seconds": _union_seconds(periods["resource"]),
            "periods": len(periods["operator"]) + len(periods["resource"]),
            "runs_per_hour": None if rate is None else rate * 3600,
            "runs_lost": None if rate is None else rate * paused,
        },
    }


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} m"


def recovery_cost_summary(cost: dict) -> str:
    """One sentence of `recovery_cost`: what `ewg metrics` and the console's audit screen print."""
    t, p = cost["totals"], cost["paused"]
    share = "" if t["wasted_share"] is None else f" ({100 * t['wasted_share']:.0f}% of stage time)"
    parts = [
        f"{t['failed_runs']} failed run(s) took {_span(t['failed_seconds'])}",
        f"{t['retries']} retry run(s) took {_span(t['retry_seconds'])}",
        f"{t['rescues']} rescue(s) threw away {_span(t['rescue_seconds'])}",
    ]
    text = ", ".join(parts) + share
    if p["seconds"]:
        lost = "" if p["runs_lost"] is None else f", about {p['runs_lost']:.0f} stage run(s) not done"
        text += f"; paused {_span(p['seconds'])} in {p['periods']} period(s){lost}"
    else:
        text += "; never paused"
    return text
