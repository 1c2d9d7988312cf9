"""The repository's value types and errors, shared by every driver and every caller."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..pipeline import KINDS

# Every running item, written so that the (kind, status, id) index finds them: `status='running'`
# alone scans the whole table (100k rows, ~3 ms a pass on SQLite, taken by the watchdog every
# second beside the console), the kinds in front make it two index lookups.
RUNNING = f"kind IN ({', '.join(repr(kind) for kind in KINDS)}) AND status='running'"

ITEM_COLUMNS = (
    "id",
    "kind",
    "parent_id",
    "source",
    "show",
    "title",
    "stage",
    "next_stage",
    "target_stage",
    "status",
    "progress",
    "progress_message",
    "heartbeat_at",
    "progress_at",
    "started_at",
    "lease_owner",
    "lease_token",
    "lease_expires_at",
    "cancel_requested",
    "cancel_requested_at",
    "attempts",
    "rescues",
    "next_attempt_at",
    "error_class",
    "error_message",
    "error_detail",
    "error_suggestion",
    "error_at",
    "verdict",
    "blocked_reason",
    "deadline_extension",
    "clip_start",
    "clip_end",
    "created_at",
    "updated_at",
)
# Statuses a worker may claim (when next_attempt_at has come).
CLAIMABLE = ("queued", "retrying")


class DatabaseError(Exception):
    """The database is missing, unreadable, corrupt or from a newer ewg; the message says what to do."""


class DatabasePathError(DatabaseError):
    """The database's path is set up wrong (not a regular file, or not readable and writable by this
    user): a mistake to fix, not damage to restore from a backup. The CLI exits 2."""


@dataclass
class Claim:
    item_id: str
    kind: str
    stage: str  # the stage to run now
    completed: str | None
    lease_token: int
    attempt_number: int
    started_at: float
    source: str
    show: str
    title: str
    parent_id: str | None
    clip_start: float | None
    clip_end: float | None
    rescues: int
    had_checkpoint: bool = False  # the stage recorded a checkpoint before: its folder may need replacing


@dataclass(frozen=True)
class Completion:
    """A successful attempt, ready to commit: the stage is done and its checkpoint recorded."""

    item_id: str
    lease_token: int
    stage: str
    next_stage: str | None  # None: the item is done
    manifest: str  # the checkpoint manifest, as JSON
    log_tail: str | None
    number: int  # the attempt row, written now: its number, worker and start
    worker: str
    started_at: float


class ReadInterrupted(Exception):
    """A Reader's read was cancelled by `Reader.interrupt()` because nobody wants its result any more."""


class Readable(Protocol):
    """What the read side (engine.db.queries) needs: a Store, or a Reader of its own; rows are read by name (`row["id"]`), by position and with `dict(row)`."""

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    def read_one(self, sql: str, params: Sequence[Any] = ()) -> Any | None: ...
