"""Named operations behind the operator's verbs: select, plan and apply (engine.verbs keeps the policy).

A verb plans and applies in one unit: the unit's selections lock the rows they return
(`dialect.for_update`, nothing on SQLite, whose one writer already excludes every other), and each
item change is a compare-and-swap on the status and lease token the verb planned from, so an item
that moved under the verb (another host's worker completed it) is reported, never overwritten.
The read functions below run the same selections outside a transaction, for a dry run's preview.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .types import Readable
from .upkeep import latest_switch, starts_with

# engine_state key of an item whose files a committed verb has still to remove; the claim skips
# such an item, so no attempt starts in a folder that is about to lose files.
PENDING_FILES = "files:"
DISCARDED = "discarded"  # left out of every filtered selection that does not name it

_CHUNK = 500  # ids per IN (...): well under SQLite's and PostgreSQL's parameter limits

_ITEM = (
    "SELECT id, kind, parent_id, stage, next_stage, status, lease_token, lease_owner, error_class,"
    " error_message, attempts, deadline_extension, cancel_requested, updated_at FROM items"
)

# The columns a verb may set on an item (its plan's values); anything else is a bug in the verb.
_SETTABLE = frozenset(
    {
        "status",
        "stage",
        "next_stage",
        "next_attempt_at",
        "attempts",
        "rescues",
        "error_class",
        "error_message",
        "error_detail",
        "error_suggestion",
        "error_at",
        "verdict",
        "blocked_reason",
        "progress",
        "progress_message",
        "cancel_requested",
        "cancel_requested_at",
        "deadline_extension",
        "lease_owner",
        "lease_expires_at",
        "updated_at",
    }
)


@dataclass(frozen=True)
class ItemState:
    """What a verb plans from: an item's place in its pipeline and the lease that may hold it."""

    id: str
    kind: str
    parent_id: str | None
    stage: str | None
    next_stage: str | None
    status: str
    lease_token: int
    lease_owner: str | None
    error_class: str | None
    error_message: str | None
    attempts: int
    deadline_extension: float
    cancel_requested: str | None
    updated_at: float

    @classmethod
    def of(cls, row: Any) -> ItemState:
        return cls(
            id=row["id"],
            kind=row["kind"],
            parent_id=row["parent_id"],
            stage=row["stage"],
            next_stage=row["next_stage"],
            status=row["status"],
            lease_token=int(row["lease_token"]),
            lease_owner=row["lease_owner"],
            error_class=row["error_class"],
            error_message=row["error_message"],
            attempts=int(row["attempts"] or 0),
            deadline_extension=float(row["deadline_extension"] or 0.0),
            cancel_requested=row["cancel_requested"],
            updated_at=float(row["updated_at"] or 0.0),
        )


# What a filter term may test: a column (one of its values must match), `show` (one of its values
# is part of the show's name, any case) or `updated_before` (one time; updated earlier than it).
TERM_FIELDS = ("status", "stage", "show", "error_class", "kind", "updated_before")


@dataclass(frozen=True)
class Term:
    """One test of a filter: `values` are alternatives (`status=failed,retrying`)."""

    field: str  # one of TERM_FIELDS; `stage` matches the last completed stage or the next one
    values: tuple

    def __post_init__(self) -> None:
        if self.field not in TERM_FIELDS:
            raise ValueError(f"no filter term {self.field!r}; terms: {', '.join(TERM_FIELDS)}")
        if not self.values or (self.field == "updated_before" and len(self.values) != 1):
            raise ValueError(
                f"filter term {self.field!r} needs {'one value' if self.field == 'updated_before' else 'values'}"
            )


@dataclass(frozen=True)
class ItemFilter:
    """A selection by filter (`--where status=failed --where older-than=2h ...`): every term must
    match; discarded items are left out unless a `status` term names them."""

    terms: tuple[Term, ...] = ()

    @classmethod
    def of(cls, *, status: Sequence[str] = (), kind: Sequence[str] = ()) -> ItemFilter:
        terms = [Term(f, tuple(v)) for f, v in (("status", status), ("kind", kind)) if v]
        return cls(tuple(terms))

    @property
    def names_discarded(self) -> bool:
        return any(t.field == "status" and DISCARDED in t.values for t in self.terms)


@dataclass(frozen=True)
class FailedItem:
    """What a failure group's fingerprint is computed from."""

    id: str
    source: str
    next_stage: str | None
    error_class: str | None
    error_message: str | None


@dataclass(frozen=True)
class Lease:
    """A running item's lease and the stage processes it recorded (deep clean rescues dead ones)."""

    id: str
    lease_owner: str | None
    lease_token: int
    stage_pid: int | None
    stage_pgid: int | None


@dataclass(frozen=True)
class PendingRemoval:
    """Files a committed verb has still to remove from one item's folder, and which process holds them."""

    item_id: str
    owner: str
    names: tuple[str, ...]
    at: float
    value: str  # as stored: finishing it is a compare-and-swap on this


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _like_part(text: str) -> str:
    """`text` anywhere in a value, as a LIKE pattern that takes the user's `%`, `_` and `\\` literally."""
    return "%" + starts_with(text)


def _filter_sql(f: ItemFilter) -> tuple[str, tuple]:
    clauses: list[str] = []
    params: list[Any] = []
    for term in f.terms:
        values = term.values
        if term.field == "stage":
            clauses.append(f"(stage IN ({_marks(values)}) OR next_stage IN ({_marks(values)}))")
            params += [*values, *values]
        elif term.field == "show":
            clauses.append("(" + " OR ".join("LOWER(show) LIKE LOWER(?) ESCAPE '\\'" for _ in values) + ")")
            params += [_like_part(str(v)) for v in values]
        elif term.field == "updated_before":
            clauses.append("updated_at < ?")
            params.append(float(values[0]))
        else:  # a column: status, error_class, kind
            clauses.append(f"{term.field} IN ({_marks(values)})")
            params += values
    if not f.names_discarded:
        clauses.append("status <> ?")
        params.append(DISCARDED)
    return " WHERE " + " AND ".join(clauses), tuple(params)


Fetch = Callable[[str, Sequence[Any]], list[Any]]


def _items(fetch: Fetch, ids: Sequence[str]) -> list[ItemState]:
    """The items of `ids` that exist, in the order of `ids` (duplicates once)."""
    ids = list(dict.fromkeys(ids))
    found: dict[str, ItemState] = {}
    for chunk in _chunks(ids):
        for row in fetch(f"{_ITEM} WHERE id IN ({_marks(chunk)})", chunk):
            found[row["id"]] = ItemState.of(row)
    return [found[i] for i in ids if i in found]


def _matching(fetch: Fetch, f: ItemFilter) -> list[ItemState]:
    where, params = _filter_sql(f)
    return [ItemState.of(r) for r in fetch(f"{_ITEM}{where} ORDER BY id", params)]


def _clips_of(fetch: Fetch, parents: Sequence[str]) -> list[ItemState]:
    """The clips of `parents` that are not discarded, by id within each chunk of parents."""
    out: list[ItemState] = []
    for chunk in _chunks(list(parents)):
        out += [
            ItemState.of(r)
            for r in fetch(
                f"{_ITEM} WHERE kind=? AND parent_id IN ({_marks(chunk)}) AND status <> ? ORDER BY id",
                ("clip", *chunk, DISCARDED),
            )
        ]
    return out


def _pending(value: str) -> tuple[str, tuple[str, ...]]:
    """(owner, names) of a stored pending removal; names that could leave the item's folder are dropped."""
    try:
        data = json.loads(value)
    except ValueError:
        return "", ()
    if not isinstance(data, dict):
        return "", ()
    names = data.get("names", [])
    if not isinstance(names, list):
        names = []
    kept = tuple(n for n in names if isinstance(n, str) and "/" not in n and n not in (".", ".."))
    return str(data.get("owner", "")), kept


class Unlocked:
    """The verbs' selections outside a transaction (a dry run's preview): the same methods as a unit's,
    without the locks, so a verb plans the same way whether it is about to apply or only to show."""

    def __init__(self, db: Readable) -> None:
        self._db = db

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return self._db.read(sql, params)

    def select_items(self, ids: Sequence[str]) -> list[ItemState]:
        return _items(self._fetch, ids)

    def select_matching(self, f: ItemFilter) -> list[ItemState]:
        return _matching(self._fetch, f)

    def select_clips_of(self, parents: Sequence[str]) -> list[ItemState]:
        return _clips_of(self._fetch, parents)


class OperatorOps:
    """Mixed into `Unit`; every change to a row a worker may hold is fenced or locked."""

    # Provided by Unit.
    dialect: Any
    execute: Callable[..., Any]

    def _fetch_locked(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return self.execute(sql + getattr(self.dialect, "for_update", ""), params).fetchall()

    # -- selections: the rows a verb plans from, locked until the unit ends --------------------
    def select_items(self, ids: Sequence[str]) -> list[ItemState]:
        """The named items that exist, in the order named."""
        return _items(self._fetch_locked, ids)

    def select_matching(self, f: ItemFilter) -> list[ItemState]:
        """The items `f` matches, by id."""
        return _matching(self._fetch_locked, f)

    def select_clips_of(self, parents: Sequence[str]) -> list[ItemState]:
        """The clips (not discarded) born of these episodes."""
        return _clips_of(self._fetch_locked, parents)

    # -- applying a plan -------------------------------------------------------------------
    def change_item(
        self,
        item_id: str,
        status: str,
        lease_token: int,
        values: Mapping[str, Any],
        *,
        fence_out: bool = False,
    ) -> bool:
        """Set `values` on the item if it is still in the status and lease the verb planned from;
        `fence_out` also bumps the lease token, so the worker that held it has its late writes refused.
        False: the item moved under the verb and nothing was changed."""
        unknown = set(values) - _SETTABLE
        if unknown:
            raise ValueError(f"a verb may not set {', '.join(sorted(unknown))} on an item")
        sets = [f"{k}=?" for k in values]
        if fence_out:
            sets.append("lease_token=lease_token+1")
        if not sets:
            sets.append("status=status")  # nothing to change, but the swap still says whether it holds
        cur = self.execute(
            f"UPDATE items SET {', '.join(sets)} WHERE id=? AND status=? AND lease_token=?",
            (*values.values(), item_id, status, lease_token),
        )
        return cur.rowcount == 1

    def mark_stale(self, item_id: str, stages: Sequence[str] | None = None) -> int:
        """Mark the item's checkpoints of `stages` (None: all of them) stale, so those stages rerun."""
        if stages is None:
            cur = self.execute("UPDATE checkpoints SET stale=TRUE WHERE item_id=?", (item_id,))
            return cur.rowcount
        if not stages:
            return 0
        cur = self.execute(
            f"UPDATE checkpoints SET stale=TRUE WHERE item_id=? AND stage IN ({_marks(stages)})",
            (item_id, *stages),
        )
        return cur.rowcount

    def record_skipped_stage(self, item_id: str, stage: str, now: float) -> None:
        """An empty checkpoint marked skipped, so the item moves past `stage` without running it."""
        self.execute(
            "INSERT INTO checkpoints (item_id, stage, manifest, created_at, stale) VALUES (?,?,?,?,FALSE)"
            " ON CONFLICT (item_id, stage) DO UPDATE SET manifest=excluded.manifest,"
            " created_at=excluded.created_at, stale=FALSE",
            (item_id, stage, json.dumps({"files": [], "skipped": True}), now),
        )

    # -- file removals that outlive the unit --------------------------------------------------
    def hold_files(self, item_id: str, names: Sequence[str], owner: str, actor: str, now: float) -> list[str]:
        """Mark the item's files pending removal (no claim starts it until they are gone) and return
        every name now pending: one an earlier verb has not removed yet is removed with these."""
        key = PENDING_FILES + item_id
        rows = self._fetch_locked("SELECT value FROM engine_state WHERE key=?", (key,))
        merged = list(dict.fromkeys([*(_pending(rows[0]["value"])[1] if rows else ()), *names]))
        self.execute(
            "INSERT INTO engine_state (key, value, reason, actor, at) VALUES (?,?,?,?,?)"
            " ON CONFLICT (key) DO UPDATE SET value=excluded.value, reason=excluded.reason,"
            " actor=excluded.actor, at=excluded.at",
            (key, json.dumps({"owner": owner, "names": merged}), "files pending removal", actor, now),
        )
        return merged

    def release_files(self, item_id: str, owner: str) -> bool:
        """The removal `owner` held is done: the item may be claimed again. False when another process
        holds it now (it took the removal over and finishes it)."""
        key = PENDING_FILES + item_id
        rows = self._fetch_locked("SELECT value FROM engine_state WHERE key=?", (key,))
        if not rows or _pending(rows[0]["value"])[0] != owner:
            return False
        cur = self.execute("DELETE FROM engine_state WHERE key=? AND value=?", (key, rows[0]["value"]))
        return cur.rowcount == 1

    def finish_removal(self, removal: PendingRemoval) -> bool:
        """A dead process's removal, finished by another: forget it if it is still as it was read."""
        cur = self.execute(
            "DELETE FROM engine_state WHERE key=? AND value=?",
            (PENDING_FILES + removal.item_id, removal.value),
        )
        return cur.rowcount == 1

    # -- deep clean ------------------------------------------------------------------------
    def running_leases(self) -> list[Lease]:
        """The leases running now, as this unit sees them (deep clean's second look, unlocked: the
        workers' heartbeats must not wait on it)."""
        return _leases(lambda sql, params: self.execute(sql, params).fetchall())

    def existing_ids(self, item_ids: Sequence[str]) -> set[str]:
        """Which of `item_ids` are items now (one made since deep clean listed the folders keeps its)."""
        found: set[str] = set()
        for chunk in _chunks(list(dict.fromkeys(item_ids))):
            found |= {
                r["id"] for r in self.execute(f"SELECT id FROM items WHERE id IN ({_marks(chunk)})", chunk)
            }
        return found

    def drop_stale_checkpoints(self, checkpoints: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Delete these (item, stage) checkpoint records if they are still stale; return those deleted
        (one republished since it was read keeps its record, and its folder)."""
        dropped = []
        for item_id, stage in checkpoints:
            cur = self.execute(
                "DELETE FROM checkpoints WHERE item_id=? AND stage=? AND stale=TRUE", (item_id, stage)
            )
            if cur.rowcount:
                dropped.append((item_id, stage))
        return dropped

    def clear_run_state(self, item_ids: Sequence[str]) -> int:
        """Forget what only a running attempt may hold (owner, lease expiry, cancel request, verdict)
        on these items, those that are still not running; return how many changed."""
        changed = 0
        for chunk in _chunks(list(item_ids)):
            cur = self.execute(
                "UPDATE items SET lease_owner=NULL, lease_expires_at=NULL, cancel_requested=NULL,"
                f" cancel_requested_at=NULL, verdict=NULL WHERE status <> ? AND id IN ({_marks(chunk)})",
                ("running", *chunk),
            )
            changed += cur.rowcount
        return changed


# -- reads outside a transaction ------------------------------------------------------------------
def read_failed(db: Readable) -> list[FailedItem]:
    """Every failed item, with what its failure group is computed from."""
    return [
        FailedItem(r["id"], r["source"], r["next_stage"], r["error_class"], r["error_message"])
        for r in db.read(
            "SELECT id, source, next_stage, error_class, error_message FROM items WHERE status=? ORDER BY id",
            ("failed",),
        )
    ]


def read_item_ids(
    db: Readable,
    *,
    statuses: Sequence[str] = (),
    kind: str | None = None,
    parents: Sequence[str] | None = None,
) -> list[str]:
    """Ids of the items in one of `statuses` (any, when empty), of `kind`, born of `parents`, by id."""
    clauses: list[str] = []
    params: list[Any] = []
    if statuses:
        clauses.append(f"status IN ({_marks(statuses)})")
        params += statuses
    if kind is not None:
        clauses.append("kind=?")
        params.append(kind)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    if parents is None:
        return [r["id"] for r in db.read(f"SELECT id FROM items{where} ORDER BY id", params)]
    ids: list[str] = []
    joiner = " AND " if where else " WHERE "
    for chunk in _chunks(list(parents)):
        sql = f"SELECT id FROM items{where}{joiner}parent_id IN ({_marks(chunk)})"
        ids += [r["id"] for r in db.read(sql, (*params, *chunk))]
    return sorted(ids)


def read_kinds(db: Readable, ids: Sequence[str]) -> dict[str, str]:
    """The kind of each of `ids` that exists."""
    kinds: dict[str, str] = {}
    for chunk in _chunks(list(dict.fromkeys(ids))):
        for r in db.read(f"SELECT id, kind FROM items WHERE id IN ({_marks(chunk)})", chunk):
            kinds[r["id"]] = r["kind"]
    return kinds


def _leases(fetch: Fetch) -> list[Lease]:
    return [
        Lease(r["id"], r["lease_owner"], int(r["lease_token"]), r["stage_pid"], r["stage_pgid"])
        for r in fetch(
            "SELECT id, lease_owner, lease_token, stage_pid, stage_pgid FROM items WHERE status=? ORDER BY id",
            ("running",),
        )
    ]


def read_running_leases(db: Readable) -> list[Lease]:
    return _leases(db.read)


def read_stale_run_state(db: Readable) -> list[str]:
    """Items that are not running but keep what only a running attempt may hold."""
    return [
        r["id"]
        for r in db.read(
            "SELECT id FROM items WHERE status <> ? AND (lease_owner IS NOT NULL OR cancel_requested IS NOT NULL"
            " OR verdict IS NOT NULL OR lease_expires_at IS NOT NULL) ORDER BY id",
            ("running",),
        )
    ]


def read_stale_checkpoints(db: Readable) -> list[tuple[str, str]]:
    """(item, stage) of every checkpoint marked stale."""
    return [
        (r["item_id"], r["stage"])
        for r in db.read("SELECT item_id, stage FROM checkpoints WHERE stale=TRUE ORDER BY item_id, stage")
    ]


def read_paused(db: Readable) -> bool:
    """Whether an operator paused the engine (the `paused` switch is on)."""
    switch = latest_switch(db, "paused")
    return bool(switch and switch.value)


def read_pending_removals(db: Readable) -> list[PendingRemoval]:
    """Every file removal a committed verb has still to finish."""
    removals = []
    for r in db.read(
        "SELECT key, value, at FROM engine_state WHERE SUBSTR(key, 1, ?) = ? ORDER BY key",
        (len(PENDING_FILES), PENDING_FILES),
    ):
        owner, names = _pending(r["value"])
        removals.append(
            PendingRemoval(r["key"][len(PENDING_FILES) :], owner, names, float(r["at"]), r["value"])
        )
    return removals
