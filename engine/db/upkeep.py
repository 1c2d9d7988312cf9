"""Named operations for upkeep: switches, health samples, services, engines, intake and retention.

Writes are methods of `UpkeepOps` (mixed into `Unit`, so `with store.write() as unit:` has them);
reads are the functions below, each taking a `Readable` (a Store or a Reader). Every operation takes
typed arguments and returns value types, never rows; the SQL is the portable kind both drivers run
(docs/ARCHITECTURE.md, "The database"). The policy — when a pause begins, which stages a down
service holds, what may be adopted — stays with the callers (engine.health, intake, retention,
workspace, doctor).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..pipeline import EPISODE
from .dialect import SQLITE, Dialect
from .types import RUNNING

if TYPE_CHECKING:
    from .types import Readable

RESOURCE_PAUSE = "resource_pause"  # the engine_state switch engine.health writes
_IN_CHUNK = 500  # ids per IN (...) list: far below SQLite's variable limit


# -- value types ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HealthSample:
    """One row of `health`: the host's figures at `at` (time_to_full_s None: the disk is not filling)."""

    at: float
    cpu_percent: float
    memory_percent: float
    disk_free_mb: float
    db_disk_free_mb: float
    time_to_full_s: float | None = None


@dataclass(frozen=True)
class Switch:
    """One engine_state switch ("" value: off)."""

    key: str
    value: str
    reason: str
    actor: str
    at: float


@dataclass(frozen=True)
class SwitchChange:
    """A switch's value before and after `UpkeepOps.update_switch`."""

    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def turned(self) -> bool:
        """It went from off to on or from on to off (not just a new reason text)."""
        return bool(self.before) != bool(self.after)


@dataclass(frozen=True)
class NewEpisode:
    """An episode for `UpkeepOps.insert_episode`: where it starts (stage None: nothing done yet)."""

    id: str
    source: str
    show: str
    title: str
    stage: str | None
    next_stage: str | None  # None: it has nothing left to run and is born done
    target_stage: str
    fingerprint: str | None = None


@dataclass(frozen=True)
class PruneCounts:
    attempts: int = 0
    events: int = 0
    health: int = 0


@dataclass(frozen=True)
class EngineRecord:
    """One row of `engines`: an engine process that registered with this database."""

    owner: str
    host: str
    pid: int
    state: str
    heartbeat_at: float


@dataclass(frozen=True)
class HeldLease:
    """A running item's lease, as doctor judges it."""

    id: str
    lease_owner: str
    lease_token: int
    lease_expires_at: float
    heartbeat_at: float
    rescues: int
    next_stage: str | None


@dataclass(frozen=True)
class ItemPlace:
    """Where an item is on its road."""

    id: str
    kind: str
    stage: str | None  # the last completed stage
    status: str
    next_stage: str | None = None
    lease_owner: str = ""
    created_at: float = 0.0


@dataclass(frozen=True)
class CheckpointRecord:
    """A recorded checkpoint; the manifest as the bytes stored (it may not even be UTF-8)."""

    item_id: str
    stage: str
    manifest: bytes
    stale: bool
    created_at: float


# -- helpers ----------------------------------------------------------------------------------------
def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def starts_with(prefix: str) -> str:
    """A LIKE pattern (used with `ESCAPE '\\'`) for text that begins with `prefix`, taken literally:
    `_` and `%` in a service name are not wildcards."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _dialect(readable: Any) -> Dialect:
    """The read side's dialect: a driver's Store or Reader names it; SQLite's until one does."""
    return getattr(readable, "dialect", SQLITE)


_ATTEMPTS_PRUNABLE = (
    "FROM attempts WHERE ended_at IS NOT NULL AND ended_at < ? AND id IN ("
    " SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY item_id ORDER BY id DESC) AS newest"
    " FROM attempts) AS ranked WHERE newest > ?)"
)


def _prunable(cutoff: float, keep_attempts_per_item: int, actors: Sequence[str]) -> dict[str, tuple]:
    """What retention removes, per table: the WHERE part and its parameters."""
    return {
        "attempts": (_ATTEMPTS_PRUNABLE, (cutoff, keep_attempts_per_item)),
        "events": (f"FROM events WHERE at < ? AND actor IN ({_marks(actors)})", (cutoff, *actors)),
        "health": ("FROM health WHERE at < ?", (cutoff,)),
    }


# -- writes -----------------------------------------------------------------------------------------
class UpkeepOps:
    """Mixed into `Unit`, which provides `execute` and `dialect`."""

    if TYPE_CHECKING:
        dialect: Dialect

        def execute(self, sql: str, params: Any = ()) -> Any: ...

    # health samples and the waits they end
    def record_health_sample(self, sample: HealthSample, *, keep_after: float) -> None:
        """Store one sample and drop the samples older than `keep_after`."""
        self.execute(
            "INSERT INTO health (at, cpu_percent, memory_percent, disk_free_mb, db_disk_free_mb,"
            " time_to_full_s) VALUES (?,?,?,?,?,?)",
            (
                sample.at,
                sample.cpu_percent,
                sample.memory_percent,
                sample.disk_free_mb,
                sample.db_disk_free_mb,
                sample.time_to_full_s,
            ),
        )
        self.execute("DELETE FROM health WHERE at < ?", (keep_after,))

    def requeue_blocked(self, *, now: float, reason_prefix: str, matching: bool) -> int:
        """Blocked items go back to the queue, ready now, no attempt spent: those whose blocked reason
        begins with `reason_prefix` (`matching`), or all the others (not `matching`). How many moved."""
        test = "LIKE" if matching else "NOT LIKE"
        return int(
            self.execute(
                "UPDATE items SET status='queued', blocked_reason=NULL, next_attempt_at=?, updated_at=?"
                f" WHERE status='blocked' AND blocked_reason {test} ? ESCAPE '\\'",
                (now, now, starts_with(reason_prefix)),
            ).rowcount
        )

    def block_waiting(self, stages: Iterable[tuple[str, str]], *, reason: str, now: float) -> int:
        """Queued and retrying items whose next stage is one of `stages` ((kind, stage) pairs) wait as
        blocked with `reason`; how many did."""
        keys = sorted({f"{kind}/{stage}" for kind, stage in stages})
        if not keys:
            return 0
        return int(
            self.execute(
                "UPDATE items SET status='blocked', blocked_reason=?, updated_at=?"
                f" WHERE status IN ('queued','retrying') AND (kind || '/' || next_stage) IN ({_marks(keys)})",
                (reason, now, *keys),
            ).rowcount
        )

    # switches and services
    def update_switch(self, key: str, value: str, *, reason: str, actor: str, now: float) -> SwitchChange:
        """Set a switch to `value` ("" turns it off) unless it holds that value already; the row is
        locked while it is compared, so two hosts' writers cannot both see the old value."""
        lock = getattr(self.dialect, "for_update", "")
        row = self.execute(f"SELECT value FROM engine_state WHERE key=?{lock}", (key,)).fetchone()
        before = "" if row is None else str(row["value"])
        if before != value:
            self.execute(
                "INSERT INTO engine_state (key, value, reason, actor, at) VALUES (?,?,?,?,?)"
                " ON CONFLICT (key) DO UPDATE SET value=excluded.value, reason=excluded.reason,"
                " actor=excluded.actor, at=excluded.at",
                (key, value, reason, actor, now),
            )
        return SwitchChange(before, value)

    def record_service(self, name: str, *, ok: bool, message: str, now: float) -> None:
        """A service's latest check; `since` moves only when it goes up or down."""
        self.execute(
            "INSERT INTO services (name, ok, message, checked_at, since) VALUES (?,?,?,?,?)"
            " ON CONFLICT (name) DO UPDATE SET ok=excluded.ok, message=excluded.message,"
            " checked_at=excluded.checked_at,"
            " since=CASE WHEN services.ok = excluded.ok THEN services.since ELSE excluded.since END",
            (name, bool(ok), message, now, now),
        )

    # intake
    def insert_episode(self, episode: NewEpisode, *, now: float) -> bool:
        """Insert a new episode, ready to run its next stage now; True when it was inserted. An existing
        id is left as it is, except that one without a content fingerprint (made before schema 6) is
        given this one."""
        cur = self.execute(
            "INSERT INTO items (id, kind, source, show, title, stage, next_stage, target_stage, status,"
            " next_attempt_at, created_at, updated_at, fingerprint) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (id) DO NOTHING",
            (
                episode.id,
                EPISODE,
                episode.source,
                episode.show,
                episode.title,
                episode.stage,
                episode.next_stage,
                episode.target_stage,
                "queued" if episode.next_stage else "done",
                now,
                now,
                now,
                episode.fingerprint,
            ),
        )
        if cur.rowcount == 1:
            if episode.next_stage:
                self.notify("work")
            return True
        if episode.fingerprint is not None:
            self.execute(
                "UPDATE items SET fingerprint=? WHERE id=? AND kind=? AND fingerprint IS NULL",
                (episode.fingerprint, episode.id, EPISODE),
            )
        return False

    def repoint_source(self, item_id: str, *, old: str, new: str, now: float) -> bool:
        """Point an episode at the file its content was found in; only while it still names `old`
        (what the caller read), so a concurrent change is never undone. True when it moved."""
        cur = self.execute(
            "UPDATE items SET source=?, updated_at=? WHERE id=? AND kind=? AND source=?",
            (new, now, item_id, EPISODE, old),
        )
        return cur.rowcount == 1

    # retention
    def prune_history(
        self, *, cutoff: float, keep_attempts_per_item: int, actors: Sequence[str]
    ) -> PruneCounts:
        """Delete finished attempts ended before `cutoff` (each item keeps its newest
        `keep_attempts_per_item`), the events of `actors` and the health samples before it."""
        counts = {
            table: int(self.execute(f"DELETE {where}", params).rowcount)
            for table, (where, params) in _prunable(cutoff, keep_attempts_per_item, actors).items()
        }
        return PruneCounts(**counts)

    # doctor's repairs
    def lock_item_place(self, item_id: str) -> ItemPlace | None:
        """An item's place, its row locked until the unit ends (None: no such item)."""
        lock = getattr(self.dialect, "for_update", "")
        row = self.execute(
            f"SELECT id, kind, stage, status, next_stage FROM items WHERE id=?{lock}", (item_id,)
        ).fetchone()
        if row is None:
            return None
        return ItemPlace(
            str(row["id"]), str(row["kind"]), row["stage"], str(row["status"]), row["next_stage"]
        )

    def adopt_outputs(
        self,
        item_id: str,
        *,
        expect_stage: str | None,
        expect_status: str,
        manifests: Mapping[str, str],
        stage: str,
        next_stage: str | None,
        status: str,
        now: float,
    ) -> bool:
        """Record `manifests` (stage -> manifest JSON) as live checkpoints and move the item to `stage`
        (attempts, error and verdict cleared), only while it is still at `expect_stage` with
        `expect_status`; False, with nothing written, when it is not."""
        cur = self.execute(
            "UPDATE items SET stage=?, next_stage=?, status=?, attempts=0, next_attempt_at=?, progress=0,"
            " progress_message='', error_class=NULL, error_message=NULL, error_detail=NULL,"
            " error_suggestion=NULL, error_at=NULL, verdict=NULL, blocked_reason=NULL, updated_at=?"
            " WHERE id=? AND stage IS NOT DISTINCT FROM ? AND status=?",
            (stage, next_stage, status, now, now, item_id, expect_stage, expect_status),
        )
        if cur.rowcount != 1:
            return False
        for done, manifest in manifests.items():
            self.execute(
                "INSERT INTO checkpoints (item_id, stage, manifest, created_at, stale) VALUES (?,?,?,?,FALSE)"
                " ON CONFLICT (item_id, stage) DO UPDATE SET manifest=excluded.manifest,"
                " created_at=excluded.created_at, stale=FALSE",
                (item_id, done, manifest, now),
            )
        return True


# -- reads ------------------------------------------------------------------------------------------
def latest_switch(readable: Readable, key: str) -> Switch | None:
    row = readable.read_one("SELECT key, value, reason, actor, at FROM engine_state WHERE key=?", (key,))
    if row is None:
        return None
    return Switch(str(row["key"]), str(row["value"]), str(row["reason"]), str(row["actor"]), float(row["at"]))


def engines(readable: Readable, *, running_only: bool = False) -> list[EngineRecord]:
    """The engine processes that registered (`running_only`: not stopped), oldest owner first."""
    where = " WHERE state != 'stopped'" if running_only else ""
    rows = readable.read(f"SELECT owner, host, pid, state, heartbeat_at FROM engines{where} ORDER BY owner")
    return [
        EngineRecord(
            str(r["owner"]), str(r["host"]), int(r["pid"]), str(r["state"]), float(r["heartbeat_at"])
        )
        for r in rows
    ]


def episode_with_content(readable: Readable, fingerprint: str) -> str | None:
    """The oldest episode whose source has this content fingerprint."""
    row = readable.read_one(
        "SELECT id FROM items WHERE fingerprint=? AND kind=? ORDER BY created_at, id LIMIT 1",
        (fingerprint, EPISODE),
    )
    return None if row is None else str(row["id"])


def item_exists(readable: Readable, item_id: str) -> bool:
    return readable.read_one("SELECT id FROM items WHERE id=?", (item_id,)) is not None


def item_ids(readable: Readable) -> set[str]:
    return {str(r["id"]) for r in readable.read("SELECT id FROM items")}


def episode_sources(readable: Readable, ids: Iterable[str]) -> dict[str, str]:
    """id -> recorded source of those of `ids` that are episodes."""
    wanted = sorted(set(ids))
    found: dict[str, str] = {}
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        rows = readable.read(
            f"SELECT id, source FROM items WHERE kind=? AND id IN ({_marks(chunk)})", (EPISODE, *chunk)
        )
        found.update((str(r["id"]), str(r["source"])) for r in rows)
    return found


def count_prunable(
    readable: Readable, *, cutoff: float, keep_attempts_per_item: int, actors: Sequence[str]
) -> PruneCounts:
    """What `UpkeepOps.prune_history` with the same arguments would delete now."""
    counts = {
        table: int(readable.read_one(f"SELECT COUNT(*) AS n {where}", params)["n"])
        for table, (where, params) in _prunable(cutoff, keep_attempts_per_item, actors).items()
    }
    return PruneCounts(**counts)


def held_leases(readable: Readable) -> list[HeldLease]:
    """Every running item's lease."""
    rows = readable.read(
        "SELECT id, lease_owner, lease_token, lease_expires_at, heartbeat_at, rescues, next_stage"
        f" FROM items WHERE {RUNNING} ORDER BY id"
    )
    return [
        HeldLease(
            str(r["id"]),
            r["lease_owner"] or "",
            int(r["lease_token"]),
            float(r["lease_expires_at"] or 0.0),
            float(r["heartbeat_at"] or 0.0),
            int(r["rescues"]),
            r["next_stage"],
        )
        for r in rows
    ]


def item_places(readable: Readable, *, unfinished_only: bool = False) -> list[ItemPlace]:
    """Every item's place (`unfinished_only`: those with a stage still to run), in id order."""
    where = " WHERE next_stage IS NOT NULL" if unfinished_only else ""
    rows = readable.read(
        f"SELECT id, kind, stage, status, next_stage, lease_owner, created_at FROM items{where} ORDER BY id"
    )
    return [
        ItemPlace(
            str(r["id"]),
            str(r["kind"]),
            r["stage"],
            str(r["status"]),
            r["next_stage"],
            r["lease_owner"] or "",
            float(r["created_at"] or 0.0),
        )
        for r in rows
    ]


def checkpoint_records(
    readable: Readable, *, item_id: str | None = None, live_only: bool = False
) -> list[CheckpointRecord]:
    """Recorded checkpoints, of one item or all (`live_only`: not marked stale)."""
    where, params = [], []
    if item_id is not None:
        where.append("item_id=?")
        params.append(item_id)
    if live_only:
        where.append("stale = FALSE")
    manifest = _dialect(readable).text_bytes.format("manifest")
    rows = readable.read(
        f"SELECT item_id, stage, {manifest} AS manifest, stale, created_at FROM checkpoints"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + " ORDER BY item_id, stage",
        params,
    )
    return [
        CheckpointRecord(
            str(r["item_id"]),
            str(r["stage"]),
            bytes(r["manifest"] or b""),
            bool(r["stale"]),
            float(r["created_at"] or 0.0),
        )
        for r in rows
    ]
