"""Named operations on the work itself: attempts, settling, releases, rescues, clips and engine rows.

The write side is `WorkOps`, mixed into `Unit`: the worker, the watchdog and the verbs end attempts
through the same few operations, each fenced by the lease token (a write whose token no longer
holds the item changes nothing and says so). The reads the runtime and the watchdog make outside
a transaction are the functions at the end, taking a `Readable`. No operation commits: the unit
does, so the dispatcher's batching (claims and completions in one transaction) survives.

The SQL is the shared dialect both databases accept (`?` placeholders, TRUE/FALSE, ON CONFLICT,
RETURNING). Where a unit reads a row a worker may hold and then writes it, the read locks the row
(`dialect.for_update`, empty on SQLite, which has one writer) and the write is a compare-and-swap
on the token it read.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .types import RUNNING
from .upkeep import starts_with

if TYPE_CHECKING:
    from .dialect import Dialect
    from .types import Readable


class Road(Protocol):
    """What a settled failure does next (engine.policy.Decision has this shape)."""

    status: str
    attempts: int
    spent: bool
    next_attempt_at: float
    text: str


# The lease columns an attempt's end clears.
RELEASED: dict[str, Any] = dict(
    lease_owner=None, lease_expires_at=None, cancel_requested=None, cancel_requested_at=None
)

# Whether the unit's attempt still holds the item: the fence of every write that ends an attempt.
_HOLDS = "id=? AND lease_token=? AND status='running'"


@dataclass(frozen=True)
class RunningItem:
    """A running item as the watchdog and the start-up rescue judge it."""

    id: str
    kind: str
    stage: str  # the stage it runs (next_stage)
    owner: str
    token: int
    lease_expires_at: float | None
    heartbeat_at: float | None
    progress: float
    progress_at: float | None
    started_at: float | None
    deadline_extension: float
    cancel_requested: str | None
    cancel_requested_at: float | None
    verdict: str | None
    rescues: int


@dataclass(frozen=True)
class HeldAttempt:
    """The attempt holding an item, read (and locked) by the unit about to end it."""

    kind: str
    stage: str
    attempts: int
    started_at: float | None


@dataclass(frozen=True)
class StageProcess:
    """The recorded process group of a running attempt."""

    owner: str
    pid: int | None
    pgid: int | None


@dataclass(frozen=True)
class EngineRow:
    """An engine that says it runs (or stops), and its last heartbeat."""

    owner: str
    heartbeat_at: float


@dataclass(frozen=True)
class ClipCut:
    """One clip an editorial stage picked: its id (episode and clip key), title and bounds."""

    id: str
    title: str
    start: float
    end: float


@dataclass(frozen=True)
class ClipBatch:
    """The clips of one editorial run, and the rows a new one starts with."""

    episode_id: str
    source: str
    show: str
    kind: str  # the clips' kind
    first_stage: str  # where a new or re-cut clip stands ...
    next_stage: str  # ... and what it runs next
    target_stage: str
    waiting_reason: str  # blocked_reason of the stopped clips an operator set waiting for this rerun
    dropped_reason: str  # blocked_reason of a waiting clip the rerun no longer picks
    clips: tuple[ClipCut, ...]


@dataclass(frozen=True)
class ClipsSettled:
    created: int = 0
    recut: int = 0  # bounds changed: back to the first stage (a running attempt is fenced out)
    retitled: int = 0
    requeued: int = 0  # waiting, and picked again
    dropped: int = 0  # waiting, and no longer picked


class WorkOps:
    """Mixed into `Unit`; every operation that ends or moves an attempt is fenced by its lease token."""

    # Provided by `Unit`: the dialect of its driver, and one statement of the shared SQL.
    dialect: Dialect
    execute: Callable[..., Any]

    # -- a unit's own savepoints -------------------------------------------------------------
    @contextlib.contextmanager
    def savepoint(self, name: str = "outcome") -> Iterator[None]:
        """A part of the unit that an error undoes alone (the error still propagates): the dispatcher
        records an outcome that renames files inside one, so its failure spoils no other outcome."""
        self.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.execute(f"ROLLBACK TO SAVEPOINT {name}")
            self.execute(f"RELEASE SAVEPOINT {name}")
            raise
        self.execute(f"RELEASE SAVEPOINT {name}")

    # -- attempts ----------------------------------------------------------------------------
    def _fenced(
        self, item_id: str, token: int, values: dict[str, Any], bump: bool, count_rescue: bool = False
    ) -> bool:
        sets = ", ".join(f"{k}=?" for k in values)
        if bump:
            sets += ", lease_token=lease_token+1"
        if count_rescue:
            sets += ", rescues=rescues+1"
        cur = self.execute(f"UPDATE items SET {sets} WHERE {_HOLDS}", (*values.values(), item_id, token))
        return cur.rowcount == 1

    def close_attempt(
        self,
        item_id: str,
        token: int,
        now: float,
        outcome: str,
        error: tuple[str | None, str | None, str | None] = (None, None, None),
        decision: str = "",
        log_tail: str | None = None,
        spent: bool = True,
    ) -> bool:
        """Record the end of the attempt that holds the item's lease; False when `token` holds nothing.
        Call it before the item row releases the lease: the row is written from the lease (stage,
        number, owner, start).

        A running attempt has no row (the claim writes none); one opened by an older ewg is closed
        in place instead."""
        error_class, message, detail = error
        cur = self.execute(
            "UPDATE attempts SET ended_at=?, outcome=?, error_class=?, error_message=?, error_detail=?,"
            " decision=?, log_tail=COALESCE(?, log_tail), duration=? - started_at, spent=?"
            " WHERE item_id=? AND lease_token=? AND ended_at IS NULL"
            f" AND EXISTS (SELECT 1 FROM items WHERE {_HOLDS})",
            (now, outcome, error_class, message, detail, decision, log_tail, now, spent)
            + (item_id, token, item_id, token),
        )
        if cur.rowcount:
            return True
        cur = self.execute(
            "INSERT INTO attempts (item_id, stage, number, worker, lease_token, started_at, ended_at,"
            " outcome, error_class, error_message, error_detail, decision, log_tail, duration, spent)"
            " SELECT id, next_stage, attempts + 1, COALESCE(lease_owner, ''), lease_token,"
            " COALESCE(started_at, ?), ?, ?, ?, ?, ?, ?, ?, ? - COALESCE(started_at, ?), ?"
            f" FROM items WHERE {_HOLDS}",
            (now, now, outcome, error_class, message, detail, decision, log_tail, now, now, spent)
            + (item_id, token),
        )
        return cur.rowcount == 1

    def settle_failure(
        self,
        item_id: str,
        token: int,
        now: float,
        outcome: str,
        decision: Road,
        error_class: str,
        message: str,
        detail: str,
        suggestion: str,
        verdict: str | None = None,
        log_tail: str | None = None,
        bump: bool = False,
        blocked_reason: str | None = None,
    ) -> bool:
        """A failed, timed-out or stalled attempt: record it and take the decided road. False when the
        token no longer holds the item (nothing changed)."""
        self.close_attempt(  # first: written from the lease the update releases
            item_id,
            token,
            now,
            outcome,
            (error_class, message, detail),
            decision.text,
            log_tail,
            decision.spent,
        )
        return self._fenced(
            item_id,
            token,
            {
                **RELEASED,
                "status": decision.status,
                "attempts": decision.attempts,
                "next_attempt_at": decision.next_attempt_at,
                "error_class": error_class,
                "error_message": message,
                "error_detail": detail,
                "error_suggestion": suggestion,
                "error_at": now,
                "verdict": verdict,
                "blocked_reason": (blocked_reason or message) if decision.status == "blocked" else None,
                "updated_at": now,
            },
            bump,
        )

    def release(
        self,
        item_id: str,
        token: int,
        now: float,
        outcome: str,
        status: str,
        decision: str,
        log_tail: str | None = None,
        bump: bool = False,
        verdict: str | None = None,
        count_rescue: bool = False,
    ) -> bool:
        """Give the item back without spending an attempt (shutdown, stop, dead owner). False when the
        token no longer holds the item (nothing changed)."""
        values = {
            **RELEASED,
            "status": status,
            "next_attempt_at": now,
            "updated_at": now,
            "verdict": verdict,
            "progress_message": decision,
        }
        self.close_attempt(item_id, token, now, outcome, decision=decision, log_tail=log_tail, spent=False)
        return self._fenced(item_id, token, values, bump, count_rescue)

    def rescue(
        self,
        item_id: str,
        token: int,
        now: float,
        *,
        outcome: str,
        why: str,
        actor: str,
        give_up: tuple[str, str, str] | None = None,
    ) -> bool:
        """Take an item back from an owner that died, without spending an attempt, and record it.

        `give_up` (error class, message, suggestion) fails the item instead of queueing it (a poison
        pill that kills its worker every time). False when the token no longer holds the item."""
        ok = self.release(
            item_id,
            token,
            now,
            outcome,
            "failed" if give_up else "queued",
            f"rescued: {why}",
            bump=True,
            verdict="DEAD",
            count_rescue=True,
        )
        if not ok:
            return False
        if give_up:
            error_class, message, suggestion = give_up
            self.execute(
                "UPDATE items SET error_class=?, error_message=?, error_suggestion=?, error_at=? WHERE id=?",
                (error_class, message, suggestion, now, item_id),
            )
        self.record_event(
            now,
            actor,
            "rescue",
            affected=[item_id],
            reason=why,
            result="failed: too many rescues" if give_up else "queued",
        )
        return True

    def held_attempt(self, item_id: str, token: int) -> HeldAttempt | None:
        """The attempt `token` holds, locked until the unit ends (None when the token holds nothing)."""
        row = self.execute(
            f"SELECT kind, next_stage, attempts, started_at FROM items WHERE {_HOLDS}{self.dialect.for_update}",
            (item_id, token),
        ).fetchone()
        if row is None:
            return None
        return HeldAttempt(row[0], row[1], int(row[2]), row[3])

    def set_verdict(self, item_id: str, token: int, verdict: str | None) -> bool:
        """The watchdog's verdict on a running attempt (None clears it); False when the token moved on."""
        cur = self.execute(f"UPDATE items SET verdict=? WHERE {_HOLDS}", (verdict, item_id, token))
        return cur.rowcount == 1

    def request_cancel(self, item_id: str, token: int, reason: str, now: float) -> bool:
        """Ask the owner of a running attempt to stop; False when asked already or the token moved on."""
        cur = self.execute(
            f"UPDATE items SET cancel_requested=?, cancel_requested_at=? WHERE {_HOLDS}"
            " AND cancel_requested IS NULL",
            (reason, now, item_id, token),
        )
        return cur.rowcount == 1

    def record_stage_process(self, item_id: str, token: int, pid: int, pgid: int) -> bool:
        """Write a stage's process group with its lease; False when the token no longer holds the item."""
        cur = self.execute(
            f"UPDATE items SET stage_pid=?, stage_pgid=? WHERE {_HOLDS}", (pid, pgid, item_id, token)
        )
        return cur.rowcount == 1

    # -- the audit trail and the switches ----------------------------------------------------
    def record_event(
        self,
        now: float,
        actor: str,
        verb: str,
        *,
        selection: str = "",
        reason: str = "",
        affected: Iterable[str] = (),
        before: dict | None = None,
        after: dict | None = None,
        result: str = "",
    ) -> int:
        """Append one event to the audit trail; returns its id."""
        row = self.execute(
            'INSERT INTO events (at, actor, verb, selection, reason, affected, "before", "after", result)'
            " VALUES (?,?,?,?,?,?,?,?,?) RETURNING id",
            (
                now,
                actor,
                verb,
                selection,
                reason,
                json.dumps(list(affected)),
                json.dumps(before or {}),
                json.dumps(after or {}),
                result,
            ),
        ).fetchone()
        return int(row[0])

    def set_switch(self, key: str, value: str, *, reason: str, actor: str, now: float) -> None:
        """Write one engine_state switch (pause, resource pause, warnings...), whoever holds it."""
        self.execute(
            'INSERT INTO engine_state ("key", value, reason, actor, at) VALUES (?,?,?,?,?)'
            ' ON CONFLICT ("key") DO UPDATE SET value=excluded.value, reason=excluded.reason,'
            " actor=excluded.actor, at=excluded.at",
            (key, value, reason, actor, now),
        )

    # -- engines -----------------------------------------------------------------------------
    def register_engine(self, owner: str, host: str, pid: int, now: float, workers: int) -> None:
        """An engine starts (or starts again under the same identity): it runs from now."""
        self.execute(
            "INSERT INTO engines (owner, host, pid, started_at, heartbeat_at, workers, busy, state, executions)"
            " VALUES (?,?,?,?,?,?,0,'running',0) ON CONFLICT (owner) DO UPDATE SET state='running',"
            " heartbeat_at=excluded.heartbeat_at, workers=excluded.workers",
            (owner, host, pid, now, now, workers),
        )

    def engine_beat(
        self, owner: str, now: float, *, busy: int, workers: int, state: str, executions: int
    ) -> None:
        """An engine's heartbeat: how busy it is, in what state, how much it has done."""
        self.execute(
            "UPDATE engines SET heartbeat_at=?, busy=?, workers=?, state=?, executions=? WHERE owner=?",
            (now, busy, workers, state, executions, owner),
        )

    def engine_stopped(self, owner: str, now: float) -> None:
        self.execute("UPDATE engines SET state='stopped', busy=0, heartbeat_at=? WHERE owner=?", (now, owner))

    def mark_engine_gone(self, owner: str, now: float, actor: str) -> bool:
        """An engine whose process is gone or whose heartbeat stopped: `gone`, with an event; False when
        it had stopped or was marked already."""
        cur = self.execute(
            "UPDATE engines SET state='gone' WHERE owner=? AND state IN ('running', 'stopping')", (owner,)
        )
        if not cur.rowcount:
            return False
        self.record_event(now, actor, "engine_gone", selection=owner, result="marked gone")
        return True

    def engine_owners(self) -> list[str]:
        """Every engine row, whatever its state (start-up forgets those whose process is gone)."""
        return [row[0] for row in self.execute("SELECT owner FROM engines ORDER BY owner").fetchall()]

    def forget_engine(self, owner: str) -> bool:
        return self.execute("DELETE FROM engines WHERE owner=?", (owner,)).rowcount == 1

    # -- clips -------------------------------------------------------------------------------
    def upsert_clips(self, batch: ClipBatch, now: float) -> ClipsSettled:
        """Settle the clips an episode's editorial run picked, keyed by episode and clip key, so a rerun
        updates instead of duplicating: new clips are created, changed bounds re-cut the clip (its
        running attempt recorded and fenced out), a new title is kept. Clips an operator verb left
        waiting for this rerun are queued again when picked, and dropped (kept, hidden) when not."""
        created = recut = retitled = requeued = dropped = 0
        picked = {clip.id for clip in batch.clips}
        waiting = self.execute(
            "SELECT id FROM items WHERE kind=? AND parent_id=? AND status='stopped' AND blocked_reason=?"
            f" ORDER BY id{self.dialect.for_update}",
            (batch.kind, batch.episode_id, batch.waiting_reason),
        ).fetchall()
        for (clip_id,) in waiting:
            if clip_id in picked:
                sets, params = "status='queued', blocked_reason=NULL, next_attempt_at=?", (now,)
            else:
                sets, params = "status='discarded', blocked_reason=?", (batch.dropped_reason,)
            cur = self.execute(
                f"UPDATE items SET {sets}, updated_at=? WHERE id=? AND status='stopped' AND blocked_reason=?",
                (*params, now, clip_id, batch.waiting_reason),
            )
            if cur.rowcount and clip_id in picked:
                requeued += 1
            elif cur.rowcount:
                dropped += 1
        for clip in batch.clips:
            new = self.execute(
                "INSERT INTO items (id, kind, parent_id, source, show, title, stage, next_stage, target_stage,"
                " status, clip_start, clip_end, next_attempt_at, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,'queued',?,?,?,?,?) ON CONFLICT (id) DO NOTHING RETURNING id",
                (
                    clip.id,
                    batch.kind,
                    batch.episode_id,
                    batch.source,
                    batch.show,
                    clip.title,
                    batch.first_stage,
                    batch.next_stage,
                    batch.target_stage,
                    clip.start,
                    clip.end,
                    now,
                    now,
                    now,
                ),
            ).fetchone()
            if new is not None:
                created += 1
                continue
            row = self.execute(
                f"SELECT clip_start, clip_end, status, lease_token FROM items WHERE id=?{self.dialect.for_update}",
                (clip.id,),
            ).fetchone()
            if (row[0], row[1]) == (clip.start, clip.end):
                self.execute("UPDATE items SET title=?, updated_at=? WHERE id=?", (clip.title, now, clip.id))
                retitled += 1
                continue
            token = row[3]
            if row[2] == "running":  # its worker cuts the old bounds: record that attempt, fence it out
                self.close_attempt(
                    clip.id,
                    token,
                    now,
                    "cancelled",
                    decision="clip re-cut by an editorial rerun",
                    spent=False,
                )
            cur = self.execute(
                "UPDATE items SET title=?, clip_start=?, clip_end=?, stage=?, next_stage=?, status='queued',"
                " lease_token=lease_token+1, lease_owner=NULL, lease_expires_at=NULL, cancel_requested=NULL,"
                " cancel_requested_at=NULL, attempts=0, next_attempt_at=?, updated_at=?"
                " WHERE id=? AND lease_token=?",
                (
                    clip.title,
                    clip.start,
                    clip.end,
                    batch.first_stage,
                    batch.next_stage,
                    now,
                    now,
                    clip.id,
                    token,
                ),
            )
            if cur.rowcount:
                self.execute("UPDATE checkpoints SET stale=TRUE WHERE item_id=?", (clip.id,))
                recut += 1
        return ClipsSettled(created, recut, retitled, requeued, dropped)


# -- reads outside a transaction ----------------------------------------------------------------


def running_items(db: Readable) -> list[RunningItem]:
    """Every running item, whoever owns it (the watchdog's pass, the start-up rescue)."""
    rows = db.read(
        "SELECT id, kind, next_stage, lease_owner, lease_token, lease_expires_at, heartbeat_at, progress,"
        " progress_at, started_at, deadline_extension, cancel_requested, cancel_requested_at, verdict, rescues"
        f" FROM items WHERE {RUNNING} ORDER BY id"
    )
    return [
        RunningItem(
            id=r[0],
            kind=r[1],
            stage=r[2],
            owner=r[3] or "",
            token=int(r[4]),
            lease_expires_at=r[5],
            heartbeat_at=r[6],
            progress=r[7] or 0.0,
            progress_at=r[8],
            started_at=r[9],
            deadline_extension=r[10] or 0.0,
            cancel_requested=r[11],
            cancel_requested_at=r[12],
            verdict=r[13],
            rescues=int(r[14]),
        )
        for r in rows
    ]


def live_leases(db: Readable) -> set[tuple[str, int]]:
    """(item, token) of every running attempt: their temporary folders are in use."""
    return {(r[0], int(r[1])) for r in db.read(f"SELECT id, lease_token FROM items WHERE {RUNNING}")}


def stage_process(db: Readable, item_id: str, token: int) -> StageProcess | None:
    """The process group recorded for the attempt `token` holds (None when the token holds nothing)."""
    row = db.read_one(
        f"SELECT lease_owner, stage_pid, stage_pgid FROM items WHERE {_HOLDS}", (item_id, token)
    )
    return None if row is None else StageProcess(row[0] or "", row[1], row[2])


def pending_work(db: Readable, resource_prefix: str) -> int:
    """Items queued, retrying or running, and those blocked by a resource (they come back by themselves)."""
    row = db.read_one(
        "SELECT COUNT(*) FROM items WHERE status IN ('queued','retrying','running')"
        " OR (status='blocked' AND blocked_reason LIKE ? ESCAPE '\\')",
        (starts_with(resource_prefix),),
    )
    return int(row[0]) if row else 0


def live_engines(db: Readable) -> list[EngineRow]:
    """Engines that say they run or stop."""
    return [
        EngineRow(r[0], r[1])
        for r in db.read(
            "SELECT owner, heartbeat_at FROM engines WHERE state IN ('running', 'stopping') ORDER BY owner"
        )
    ]


def recent_durations(db: Readable, kind: str, stage: str, limit: int = 50) -> list[float]:
    """Durations of the latest successful attempts of a stage, newest first."""
    rows = db.read(
        "SELECT a.duration FROM attempts a JOIN items i ON i.id = a.item_id WHERE i.kind=? AND a.stage=?"
        " AND a.outcome='succeeded' AND a.duration IS NOT NULL ORDER BY a.id DESC LIMIT ?",
        (kind, stage, int(limit)),
    )
    return [float(r[0]) for r in rows]
