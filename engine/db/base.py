"""The repository's driver interface, and the named operations whose SQL both databases share.

A driver (engine/db/sqlite.py, engine/db/postgres.py) owns its connections, its transactions, its
migrations and its upkeep (backup, integrity, vacuum). The hot path lives here once: the claim,
the batch completion and the heartbeat are the same SQL on both, apart from the clauses the dialect
supplies (SQLite's index hint, PostgreSQL's SKIP LOCKED). The engine's batching survives the seam:
a claim batch and a completion batch run on the caller's `Unit`, in one transaction.
"""

from __future__ import annotations

import abc
import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .dialect import Dialect
from .types import Claim, Completion, DatabaseError
from .unit import Unit

# Rows per multi-row statement: far below SQLite's variable limit (32766) and PostgreSQL's (65535)
# at 9 variables a row.
_BATCH_ROWS = 200


class Store(abc.ABC):
    """One per process and database; hands each thread its own connection."""

    backend = ""  # "sqlite" | "postgresql"
    dialect: Dialect
    schema_target = 0  # the newest schema version this driver knows
    supports_backup = True  # ewg copies the database itself (SQLite); a server's own tools do otherwise
    unreachable_since: float | None = None  # a server this process cannot reach right now, since when
    busy_reason = "writes waited for a database lock held elsewhere"  # what busy_waits counts

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self.busy_waits = 0  # times a write had to wait for another writer or a lost connection
        self.last_busy_at: float | None = None

    # -- what each driver supplies --------------------------------------------------------
    @abc.abstractmethod
    def _connect(self) -> Any:
        """A new connection for the calling thread."""

    @abc.abstractmethod
    def write(self) -> contextlib.AbstractContextManager[Unit]:
        """One write transaction: commits when the block ends, rolls back on an error."""

    @property
    def local_dir(self):  # -> Path | None
        """The folder on this host that holds the database (its disk is watched), None for a server."""
        path = getattr(self, "path", None)
        return None if path is None else path.parent

    def verify(self) -> None:
        """Check the database's own pages; DatabaseError when damaged. PostgreSQL checks its pages
        itself (checksums, WAL), so the default does nothing."""
        return None

    @abc.abstractmethod
    def describe(self) -> str:
        """The database as an operator would name it (a path, or a URL without its password)."""

    @abc.abstractmethod
    def schema_version(self) -> int:
        """The schema version the database holds (0: none of ewg's)."""

    # -- many hosts (one host on SQLite: it always leads, and wake-ups stay in the process) ----------
    def try_lead(self, owner: str = "", dead_after: float | None = None, now: float | None = None) -> bool:
        """True while this process leads the once-per-site maintenance (`owner` names it to the others,
        and a leader whose heartbeat is older than `dead_after` loses the lead)."""
        return True

    def wait(self, timeout: float) -> list[str]:
        """Block up to `timeout` for wake-ups from other hosts (none on SQLite: it just waits)."""
        time.sleep(timeout)
        return []

    # -- connections ----------------------------------------------------------------------
    def connection(self) -> Any:
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _forget_connection(self) -> None:
        """Drop this thread's connection (it broke); the next use opens a new one."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock, contextlib.suppress(ValueError):
                self._all.remove(conn)
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(Exception):
                    conn.close()
            self._all.clear()
        self._local = threading.local()

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.connection().execute(self.dialect.sql(sql), params).fetchall()

    def read_one(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        return self.connection().execute(self.dialect.sql(sql), params).fetchone()

    # -- feed positions and identity ------------------------------------------------------
    def read_cursor(self, name: str) -> int | None:
        """A feed position kept in engine_state (None until it is first set)."""
        row = self.read_one("SELECT value FROM engine_state WHERE key = ?", (name,))
        return int(row[0]) if row is not None and row[0] != "" else None

    def advance_cursor(self, name: str, expected: int | None, new: int, now: float) -> bool:
        """Compare-and-swap a feed position: True when this caller moved it from `expected` to `new`."""
        with self.write() as conn:
            if expected is None:
                cur = conn.execute(
                    "INSERT INTO engine_state (key, value, at) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING",
                    (name, str(new), now),
                )
            else:
                cur = conn.execute(
                    "UPDATE engine_state SET value = ?, at = ? WHERE key = ? AND value = ?",
                    (str(new), now, name, str(expected)),
                )
            return cur.rowcount == 1

    def identity(self) -> str:
        """This database's random identity (schema 5), which the items root's ownership marker names."""
        row = self.read_one("SELECT value FROM workspace WHERE key = 'identity'")
        if row is None:
            raise DatabaseError(f"{self.describe()} has no workspace identity; run `ewg doctor --repair`.")
        return str(row[0])

    # -- the hot path ---------------------------------------------------------------------
    def claim(
        self, owner: str, now: float, lease_duration: float, blocked_stages: Sequence[tuple[str, str]] = ()
    ) -> Claim | None:
        """Take the next ready item in a transaction of its own."""
        with self.write() as unit:
            claims = self.claim_batch(unit, owner, now, lease_duration, blocked_stages, 1)
        return claims[0] if claims else None

    def claim_batch(
        self,
        unit: Unit,
        owner: str,
        now: float,
        lease_duration: float,
        blocked_stages: Sequence[tuple[str, str]],
        limit: int,
    ) -> list[Claim]:
        """Inside the caller's write transaction, lease up to `limit` ready items: owner, start, expiry and
        a new fencing token each, and what the stage needs to start.

        No attempt row yet: the lease on the item row holds everything one needs (stage, number, owner,
        token, start), and the row is written once, when the attempt ends, by whoever ends it
        (Unit.close_attempt, complete_batch): one statement and two index writes fewer per
        execution than opening a row here and closing it later.

        An item whose files a committed verb is still removing (`engine_state` key `files:ID`,
        engine.db.operator.PENDING_FILES) is not claimed until they are gone."""
        d = unit.dialect
        skip = ""
        params: list[Any] = [now]
        if blocked_stages:
            skip = " AND (kind || '/' || next_stage) NOT IN (%s)" % ",".join("?" * len(blocked_stages))
            params += [f"{k}/{s}" for k, s in blocked_stages]
        rows = unit.execute(
            f"""UPDATE items SET status='running', lease_owner=?, lease_token=lease_token+1,
                    lease_expires_at=?, heartbeat_at=?, progress_at=?, started_at=?, progress=0,
                    progress_message='', verdict=NULL, cancel_requested=NULL, cancel_requested_at=NULL,
                    blocked_reason=NULL, deadline_extension=0, stage_pid=NULL, stage_pgid=NULL, updated_at=?
                WHERE id IN (SELECT id FROM items{d.ready_index} WHERE status IN ('queued','retrying')
                             AND next_attempt_at <= ? AND next_stage IS NOT NULL{skip}
                             AND NOT EXISTS (SELECT 1 FROM engine_state WHERE key='paused' AND value='1')
                             AND NOT EXISTS (SELECT 1 FROM engine_state WHERE key='files:' || items.id)
                             ORDER BY next_attempt_at, id LIMIT ?{d.skip_locked})
                RETURNING id, kind, stage, next_stage, lease_token, attempts, source, show, title,
                          parent_id, clip_start, clip_end, rescues,
                          EXISTS (SELECT 1 FROM checkpoints c WHERE c.item_id = items.id
                                  AND c.stage = items.next_stage) AS had_checkpoint""",
            [owner, now + lease_duration, now, now, now, now, *params, int(limit)],
        ).fetchall()
        return [
            Claim(
                item_id=row["id"],
                kind=row["kind"],
                stage=row["next_stage"],
                completed=row["stage"],
                lease_token=row["lease_token"],
                attempt_number=row["attempts"] + 1,
                started_at=now,
                source=row["source"],
                show=row["show"],
                title=row["title"],
                parent_id=row["parent_id"],
                clip_start=row["clip_start"],
                clip_end=row["clip_end"],
                rescues=row["rescues"],
                had_checkpoint=bool(row["had_checkpoint"]),
            )
            for row in rows
        ]

    @staticmethod
    def complete_batch(unit: Unit, done: Sequence[Completion], now: float) -> set[str]:
        """Inside the caller's write transaction, commit successful attempts: each item whose lease token
        still holds moves on to its next stage (or is done), gets its checkpoint record and its attempt
        row. Returns the ids accepted; an item whose token no longer holds is left untouched.

        Three multi-row statements for the whole batch instead of three per attempt: the dispatcher
        runs them while workers wait for their next claim."""
        accepted: set[str] = set()
        for chunk in _chunks(done):
            ids = unit.execute(
                "WITH v(id, token, stage, next_stage) AS (VALUES "
                + ",".join(["(?,?,?,?)"] * len(chunk))
                + ")"
                """ UPDATE items SET stage=v.stage, next_stage=v.next_stage,
                        status=CASE WHEN v.next_stage IS NULL THEN 'done' ELSE 'queued' END,
                        lease_owner=NULL, lease_expires_at=NULL, cancel_requested=NULL, cancel_requested_at=NULL,
                        attempts=0, rescues=0, progress=1.0, progress_message='', error_class=NULL,
                        error_message=NULL, error_detail=NULL, error_suggestion=NULL, error_at=NULL, verdict=NULL,
                        next_attempt_at=?, updated_at=?
                    FROM v WHERE items.id=v.id AND items.lease_token=v.token AND items.status='running'
                    RETURNING items.id""",
                [*(x for c in chunk for x in (c.item_id, c.lease_token, c.stage, c.next_stage)), now, now],
            ).fetchall()
            returned = {row[0] for row in ids}
            kept = [c for c in chunk if c.item_id in returned]
            if not kept:
                continue
            accepted.update(c.item_id for c in kept)
            unit.execute(
                "INSERT INTO checkpoints (item_id, stage, manifest, created_at, stale) VALUES "
                + ",".join(["(?,?,?,?,FALSE)"] * len(kept))
                + " ON CONFLICT(item_id, stage) DO UPDATE SET manifest=excluded.manifest,"
                " created_at=excluded.created_at, stale=FALSE",
                [x for c in kept for x in (c.item_id, c.stage, c.manifest, now)],
            )
            unit.execute(
                "INSERT INTO attempts (item_id, stage, number, worker, lease_token, started_at, ended_at, outcome,"
                " decision, log_tail, duration, spent) VALUES "
                + ",".join(["(?,?,?,?,?,?,?,'succeeded','checkpoint committed',?,?,TRUE)"] * len(kept)),
                [
                    x
                    for c in kept
                    for x in (
                        c.item_id,
                        c.stage,
                        c.number,
                        c.worker,
                        c.lease_token,
                        c.started_at,
                        now,
                        c.log_tail,
                        now - c.started_at,
                    )
                ],
            )
        return accepted

    def earlier_work(self, claim: Claim) -> tuple[int, set[str], set[str]]:
        """For a claimed attempt: earlier attempts of its stage, and stages with a fresh checkpoint (its
        own and its episode's)."""
        # A running attempt has no row yet (claim_batch), so every row of the stage is an earlier one.
        previous = self.read_one(
            "SELECT COUNT(*) FROM attempts WHERE item_id=? AND stage=?", (claim.item_id, claim.stage)
        )[0]
        own = self.read("SELECT stage, stale FROM checkpoints WHERE item_id=?", (claim.item_id,))
        parent = (
            self.read("SELECT stage FROM checkpoints WHERE item_id=? AND stale=FALSE", (claim.parent_id,))
            if claim.parent_id
            else []
        )
        return previous, {r[0] for r in own if not r[1]}, {r[0] for r in parent}

    def heartbeat(
        self, beats: Sequence[tuple[str, int, float, str, float]], now: float, lease_duration: float
    ) -> dict[str, str | None]:
        """Extend many leases in one transaction.

        `beats` holds (item_id, lease_token, progress, message, progress_at). Returns, per item,
        the pending cancel request (None for none) or "LOST" when the token no longer matches.
        """
        result: dict[str, str | None] = {}
        if not beats:
            return result
        with self.write() as unit:
            for item_id, token, progress, message, progress_at in beats:
                row = unit.execute(
                    """UPDATE items SET heartbeat_at=?, lease_expires_at=?, progress=?, progress_message=?,
                            progress_at=?, updated_at=?
                       WHERE id=? AND lease_token=? AND status='running' RETURNING cancel_requested""",
                    (now, now + lease_duration, progress, message, progress_at, now, item_id, token),
                ).fetchone()
                result[item_id] = "LOST" if row is None else row["cancel_requested"]
        return result


def _chunks(rows: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(rows), _BATCH_ROWS):
        yield rows[start : start + _BATCH_ROWS]
