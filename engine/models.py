"""The schema, declared with SQLModel (ARCHITECTURE.md contract 1).

Episodes and clips share one `items` table (`kind` tells them apart, clips
point at their episode with `parent_id`): the claim query, the watchdog and the
verbs then treat every unit of work the same way. Times are UTC epoch seconds.
Every read and write goes through the repository (engine/db/) with the database's own driver;
this module declares the tables' shape, and tests/core/test_engine_schema.py checks that the
SQLite driver's frozen migrations (engine/db/sqlite.py) build it.
"""

from __future__ import annotations

from sqlmodel import Field, SQLModel


def D(value):  # noqa: N802 - reads like a type annotation
    """A column default that also holds for raw SQL inserts on the hot path (a server default)."""
    text = str(int(value)) if isinstance(value, bool) else str(value)
    return Field(default=value, sa_column_kwargs={"server_default": text})


class Item(SQLModel, table=True):
    __tablename__ = "items"

    id: str = Field(primary_key=True)
    kind: str = Field(index=True)  # episode | clip
    parent_id: str | None = Field(default=None, index=True)
    source: str = D("")
    show: str = D("")
    title: str = D("")
    stage: str | None = None  # last completed stage
    next_stage: str | None = None  # what runs next (None when done)
    target_stage: str = D("")
    status: str = D("queued")  # queued|running|retrying|blocked|failed|stopped|done
    progress: float = D(0.0)
    progress_message: str = D("")
    heartbeat_at: float | None = None
    progress_at: float | None = None
    started_at: float | None = None
    lease_owner: str | None = None
    lease_token: int = D(0)  # fencing token, bumped on every change of hands
    lease_expires_at: float | None = None
    cancel_requested: str | None = None  # stop | force | timeout | stall
    cancel_requested_at: float | None = None
    attempts: int = D(0)  # attempts spent on the current stage
    rescues: int = D(0)  # dead-owner rescues on the current stage
    next_attempt_at: float = D(0.0)
    error_class: str | None = None
    error_message: str | None = None
    error_detail: str | None = None
    error_suggestion: str | None = None
    error_at: float | None = None
    verdict: str | None = None  # DEAD | STALLED | SLOW | TIMED OUT
    blocked_reason: str | None = None
    deadline_extension: float = D(0.0)
    stage_pid: int | None = None  # the running command stage's process (schema 5)
    stage_pgid: int | None = None  # ... and its process group, killed on rescue
    fingerprint: str | None = None  # an episode source's content fingerprint (schema 6): its identity
    clip_start: float | None = None
    clip_end: float | None = None
    created_at: float = D(0.0)
    updated_at: float = D(0.0)


class Attempt(SQLModel, table=True):
    __tablename__ = "attempts"

    id: int | None = Field(default=None, primary_key=True)
    item_id: str  # indexed with id: ix_attempts_item (engine/db/sqlite.py)
    stage: str
    number: int
    worker: str
    lease_token: int
    started_at: float
    ended_at: float | None = None
    outcome: str | None = None  # succeeded|failed|timed_out|stalled|dead|cancelled|abandoned|crashed
    error_class: str | None = None
    error_message: str | None = None
    error_detail: str | None = None
    decision: str | None = None  # what the engine decided and why
    log_tail: str | None = None
    duration: float | None = None
    spent: bool = D(True)  # counted against max_attempts


class Checkpoint(SQLModel, table=True):
    __tablename__ = "checkpoints"

    item_id: str = Field(primary_key=True)
    stage: str = Field(primary_key=True)
    manifest: str = D("{}")  # JSON: {"files": [{"path", "size", "sha256"}], "skipped": bool}
    created_at: float = D(0.0)
    stale: bool = D(False)


class Event(SQLModel, table=True):
    __tablename__ = "events"

    id: int | None = Field(default=None, primary_key=True)
    at: float = Field(index=True)
    actor: str  # OS user for operator verbs, `engine` or `watchdog`
    verb: str = Field(index=True)
    selection: str = D("")
    reason: str = D("")
    affected: str = D("[]")  # JSON list of item ids
    before: str = D("{}")  # JSON {id: {stage, status}}
    after: str = D("{}")
    result: str = D("")


class EngineState(SQLModel, table=True):
    """Shared switches: `paused` (operator) and `resource_pause` (health)."""

    __tablename__ = "engine_state"

    key: str = Field(primary_key=True)
    value: str = D("")
    reason: str = D("")
    actor: str = D("")
    at: float = D(0.0)


class EngineProcess(SQLModel, table=True):
    """One row per running engine process, so an attached console can show them."""

    __tablename__ = "engines"

    owner: str = Field(primary_key=True)  # host:pid:start
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    workers: int
    busy: int = D(0)
    state: str = D("running")  # running | stopping | stopped | gone (its process died)
    executions: int = D(0)  # stage executions finished since start


class ServiceHealth(SQLModel, table=True):
    __tablename__ = "services"

    name: str = Field(primary_key=True)
    ok: bool = D(True)
    message: str = D("")
    checked_at: float = D(0.0)
    since: float = D(0.0)


class HealthSample(SQLModel, table=True):
    __tablename__ = "health"

    id: int | None = Field(default=None, primary_key=True)
    at: float = Field(index=True)
    cpu_percent: float
    memory_percent: float
    disk_free_mb: float
    db_disk_free_mb: float
    time_to_full_s: float | None = None


class WorkspaceMeta(SQLModel, table=True):
    """Facts about the database itself: `identity`, named by the items root's ownership marker."""

    __tablename__ = "workspace"

    key: str = Field(primary_key=True)
    value: str = D("")
