"""Operator verbs (ARCHITECTURE.md contract 8): the only way people change work.

Every verb takes a selection, can return a preview (which items change, which
stages rerun, which caches go) without changing anything, and when applied
does it in one transaction that also writes one audit event (who, when, verb,
selection, reason, before/after). A running item that a verb takes over is
fenced out by bumping its lease token, so its worker's late writes are refused.
The console and the CLI call these; neither writes the database itself.
"""

from __future__ import annotations

import getpass
import json
import math
import os
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import checkpoints, errors, ownership, pipeline
from .owners import owner_alive, owner_id
from .stages import groups
from .text import is_utf8
from .workspace import Workspace

ACTIVE = ("queued", "retrying", "blocked", "running")
# engine_state key of an item whose files a committed verb has still to remove; Store.claim_batch
# skips such an item, so no attempt starts in a folder that is about to lose files.
PENDING_FILES = "files:"
FileWork = dict[str, list[str]]  # item id -> entries of its folder to remove ("" the folder, "*" patterns)
RETRYABLE = ("failed", "retrying", "blocked", "stopped")
DISCARDED = "discarded"  # a dead letter: failed, archived by an operator, hidden by default, retryable
AWAITS_EDITORIAL = pipeline.AWAITS_EDITORIAL


class VerbError(Exception):
    """The request cannot be carried out as asked; the message says why and what to do instead."""


REASON_MAX_BYTES = 1024


def check_reason(reason: str) -> str:
    """The reason as the audit log keeps it, or a VerbError when it is too long (the CLI's `--reason`
    and the console's reason prompt both come here). Kept as typed, except bytes that are not UTF-8
    (from a command line in another encoding), which SQLite cannot store: kept as `\\xNN`."""
    size = len(reason.encode("utf-8", "surrogatepass"))
    if size > REASON_MAX_BYTES:
        raise VerbError(
            f"The reason is {size} bytes long; the audit log keeps at most {REASON_MAX_BYTES} bytes (1 KiB). "
            "Shorten it: say why in a sentence or two, and point to a ticket or a file for the rest."
        )
    if is_utf8(reason):
        return reason
    return reason.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass
class Plan:
    """What a verb would do to one item."""

    values: dict  # new column values
    stages_rerun: list[str] = field(default_factory=list)
    drop_cache: bool = False
    delete_files: bool = False
    skipped_stage: str | None = None  # record an empty "skipped" checkpoint for this stage
    shown_after: dict | None = None  # what the preview says happens, when `values` alone would not show it
    note: str = ""  # one more thing the preview says about this item


@dataclass
class Change:
    item_id: str
    kind: str
    before: dict
    after: dict
    stages_rerun: list[str] = field(default_factory=list)
    cache_dropped: bool = False
    files_deleted: bool = False
    interrupts_run: bool = False
    plan: Plan | None = field(default=None, repr=False)
    note: str = ""
    lease_token: int = field(default=0, repr=False)  # as planned: apply() refuses a row that moved since

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("plan", "lease_token")}


@dataclass
class Preview:
    verb: str
    selection: str
    changes: list[Change] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item id, why the verb does not apply)
    applied: bool = False
    event_id: int | None = None
    notes: list[str] = field(default_factory=list)
    reason: str = field(default="", repr=False)
    replayable: bool = False  # planned per item (not a sweep): apply() can apply exactly this preview
    also: Callable[[sqlite3.Connection, float], None] | None = field(default=None, repr=False)

    @property
    def nothing_to_do(self) -> bool:
        return not self.changes

    @property
    def item_ids(self) -> list[str]:
        return [c.item_id for c in self.changes]

    def summary(self) -> str:
        verb = self.verb.replace("_", " ")
        head = f"{verb}: {len(self.changes)} item(s) {'changed' if self.applied else 'would change'}"
        if self.skipped:
            head += f", {len(self.skipped)} not applicable"
        return head

    def to_dict(self) -> dict:
        return {
            "verb": self.verb,
            "selection": self.selection,
            "applied": self.applied,
            "event_id": self.event_id,
            "changes": [c.to_dict() for c in self.changes],
            "skipped": [{"id": i, "why": w} for i, w in self.skipped],
            "notes": self.notes,
        }


Planner = Callable[[sqlite3.Row], "Plan | str"]  # a Plan, or why the verb does not apply to the row

_ROW = (
    "SELECT id, kind, parent_id, stage, next_stage, status, lease_token, lease_owner, error_class,"
    " error_message, attempts, deadline_extension, cancel_requested, parent_id, updated_at FROM items"
)


@dataclass(frozen=True)
class Where:
    """A selection by filter (`--where status=failed stage=transcribed ...`), applied in SQL."""

    sql: str
    params: tuple
    text: str


_WHERE_KEYS = ("status", "stage", "show", "class", "kind", "older-than")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")


def parse_where(terms: Iterable[str], now: float) -> Where:
    """`status=failed,retrying stage=transcribed show=tech class=transient kind=clip older-than=2h`.

    Discarded items are left out unless `status=discarded` names them."""
    from .db.queries import STATUSES

    clauses, params, shown = [], [], []
    statuses: tuple[str, ...] = ()
    for term in terms:
        words = term.split()  # "status=failed stage=x" in one argument, or one value with spaces
        for word in words if all("=" in w for w in words) else [term.strip()]:
            key, sep, value = word.partition("=")
            key = key.lower()
            if not sep or not value or key not in _WHERE_KEYS:
                raise VerbError(
                    f"--where {word!r}: expected KEY=VALUE with KEY one of {', '.join(_WHERE_KEYS)}"
                    " (for example --where status=failed --where older-than=2h)."
                )
            values = tuple(v for v in value.split(",") if v)
            if key == "status":
                known = (*STATUSES, DISCARDED)
                bad = [v for v in values if v not in known]
                if bad:
                    raise VerbError(
                        f"--where status={bad[0]!r} is not a status; statuses: {', '.join(known)}."
                    )
                statuses = values
                clauses.append(f"status IN ({','.join('?' * len(values))})")
                params += values
            elif key == "stage":
                every = {s for k in pipeline.KINDS for s in pipeline.stages_of(k)}
                bad = [v for v in values if v not in every]
                if bad:
                    raise VerbError(
                        f"--where stage={bad[0]!r} is not a stage. Episode stages: "
                        f"{', '.join(pipeline.EPISODE_STAGES)}; clip stages: {', '.join(pipeline.CLIP_STAGES)}."
                    )
                marks = ",".join("?" * len(values))
                clauses.append(f"(stage IN ({marks}) OR next_stage IN ({marks}))")
                params += values + values
            elif key == "show":
                clauses.append("(" + " OR ".join("show LIKE ?" for _ in values) + ")")
                params += tuple(f"%{v}%" for v in values)
            elif key == "class":
                bad = [v for v in values if v not in errors.ERROR_CLASSES]
                if bad:
                    raise VerbError(
                        f"--where class={bad[0]!r} is not an error class; classes: {', '.join(errors.ERROR_CLASSES)}."
                    )
                clauses.append(f"error_class IN ({','.join('?' * len(values))})")
                params += values
            elif key == "kind":
                bad = [v for v in values if v not in pipeline.KINDS]
                if bad:
                    raise VerbError(f"--where kind={bad[0]!r}: kinds are {', '.join(pipeline.KINDS)}.")
                clauses.append(f"kind IN ({','.join('?' * len(values))})")
                params += values
            else:
                clauses.append("updated_at < ?")
                params.append(now - _duration(value))
            shown.append(word)
    if not shown:
        raise VerbError("--where needs at least one KEY=VALUE filter.")
    if DISCARDED not in statuses:
        clauses.append("status <> 'discarded'")
    return Where("WHERE " + " AND ".join(clauses), tuple(params), "where " + " ".join(shown))


def _duration(text: str) -> float:
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise VerbError(f"--where older-than={text!r}: give a duration such as 90s, 30m, 2h or 3d.")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def _needed_by(kind: str, stage: str, config) -> str | None:
    """The later stage that reads `stage`'s output and has no fallback without it, if any."""
    if config.stage(kind, stage).skip_fallback:
        return None
    for later in pipeline.later_stages(kind, stage):
        later_config = config.stage(kind, later)
        reads = later_config.reads
        if reads is None:
            reads = pipeline.BUILTIN_READS.get((kind, later), ()) if later_config.kind == "builtin" else ()
        if stage in reads:
            return later
    return None


class Operator:
    """Carries out verbs on a workspace as one person (the OS user unless told otherwise)."""

    def __init__(self, ws: Workspace, actor: str | None = None, *, strict: bool = True) -> None:
        """`strict`: a verb that does not apply to a named item refuses the whole call (the CLI); the
        console instead shows which marked rows it left out."""
        self.strict = strict
        self.ws = ws
        self.store = ws.store
        self.clock = ws.clock
        self.actor = actor or _os_user()

    # -- selections ----------------------------------------------------------------------
    def _select(
        self,
        conn: sqlite3.Connection,
        ids: Iterable[str] | Where | None = None,
        *,
        where: str = "",
        params: tuple = (),
    ) -> list[sqlite3.Row]:
        if isinstance(ids, Where):
            return conn.execute(f"{_ROW} {ids.sql} ORDER BY id", ids.params).fetchall()
        if isinstance(ids, _Found) and not ids:
            return []
        if ids is not None:
            ids = list(dict.fromkeys(ids))
            if not ids:
                raise VerbError("No items selected. Name item ids, or use --failed / --all.")
            rows = []
            for chunk in _chunks(ids, 500):
                rows += conn.execute(f"{_ROW} WHERE id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            found = {r["id"] for r in rows}
            missing = [i for i in ids if i not in found]
            if missing:
                raise VerbError(
                    f"Unknown item id{'s' if len(missing) > 1 else ''}: {', '.join(missing[:5])}"
                    f"{' ...' if len(missing) > 5 else ''}. `ewg status` lists the ids."
                )
            order = {i: n for n, i in enumerate(ids)}
            return sorted(rows, key=lambda r: order[r["id"]])
        if where and "discarded" not in where:
            where += " AND status <> 'discarded'"
        elif not where:
            where = "WHERE status <> 'discarded'"
        return conn.execute(f"{_ROW} {where} ORDER BY id", params).fetchall()

    def failure_group_ids(self, fingerprint: str) -> list[str]:
        stage, _, rest = fingerprint.partition("|")
        error_class, sep, _message = rest.partition("|")
        stages = {s for k in pipeline.KINDS for s in pipeline.stages_of(k)}
        if not sep or stage not in (*stages, "-") or error_class not in (*errors.ERROR_CLASSES, "-"):
            raise VerbError(
                f"{fingerprint!r} is not a failure group fingerprint (STAGE|CLASS|MESSAGE);"
                " `ewg failures` lists the groups with the command for each."
            )
        rows = self.store.read(
            "SELECT id, source, next_stage, error_class, error_message FROM items WHERE status='failed'"
        )
        ids = [
            r["id"]
            for r in rows
            if errors.fingerprint(
                r["next_stage"], r["error_class"], r["error_message"], item_id=r["id"], source=r["source"]
            )
            == fingerprint
        ]
        return ids  # none: a selection that matches nothing, so "nothing to do"

    # -- the engine of every verb ----------------------------------------------------------
    def _run(
        self,
        verb: str,
        selection: str,
        select: Callable[[sqlite3.Connection], list[sqlite3.Row]],
        plan: Planner,
        reason: str,
        dry_run: bool,
        *,
        named: bool = False,
        also: Callable[[sqlite3.Connection, float], None] | None = None,
        expand: Callable[[sqlite3.Connection, Preview], None] | None = None,
    ) -> Preview:
        """Plan and (unless dry_run) apply in one transaction. `named`: the ids were named by a person,
        so a verb that does not apply to one of them is a mistake in the call (VerbError, nothing
        changed); a selection that matches nothing is "nothing to do" and writes no event."""
        reason = check_reason(reason)
        now = self.clock.now()
        if dry_run:
            conn = self.store.connection()
            preview = self._plan(verb, selection, select(conn), plan)
            if expand:
                expand(conn, preview)
            self._check_named(preview, named and self.strict)
            preview.also, preview.replayable = also, True
            return preview
        self._finish_removals()
        with self.store.write() as conn:
            rows = select(conn)
            preview = self._plan(verb, selection, rows, plan)
            if expand:
                expand(conn, preview)
            self._check_named(preview, named and self.strict)
            preview.reason, preview.also = reason, also
            work = self._commit(conn, preview, now)
        _remove_files(self.ws, work)  # only now that the change is committed
        return preview

    def _finish_removals(self) -> None:
        try:
            finish_pending_removals(self.ws)
        except ownership.OwnershipError as exc:
            raise VerbError(str(exc)) from None

    def _confirm_owned(self) -> None:
        try:
            self.ws.confirm_owned()
        except ownership.OwnershipError as exc:
            raise VerbError(str(exc)) from None

    def apply(self, preview: Preview, reason: str = "") -> Preview:
        """Apply exactly what a dry run previewed (what the confirmation showed), fenced: an item whose
        lease or status moved since the preview is left alone and reported, never re-planned."""
        if preview.applied:
            raise VerbError("This preview was applied already.")
        now = self.clock.now()
        done = Preview(
            preview.verb, preview.selection, notes=list(preview.notes), skipped=list(preview.skipped)
        )
        done.reason, done.also = reason, preview.also
        self._finish_removals()
        with self.store.write() as conn:
            ids = [c.item_id for c in preview.changes]
            rows = {}
            for chunk in _chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                rows.update({r["id"]: r for r in conn.execute(f"{_ROW} WHERE id IN ({marks})", chunk)})
            for change in preview.changes:
                row = rows.get(change.item_id)
                if (
                    row is None
                    or row["lease_token"] != change.lease_token
                    or row["status"] != change.before.get("status")
                ):
                    done.skipped.append((change.item_id, "changed since the preview; not touched"))
                else:
                    done.changes.append(change)
            work = self._commit(conn, done, now)
        _remove_files(self.ws, work)
        return done

    def _commit(self, conn: sqlite3.Connection, preview: Preview, now: float) -> FileWork:
        """Write the planned changes and their audit event; return the file work for after the commit."""
        work: FileWork = {}
        if preview.nothing_to_do and preview.also is None:
            preview.notes.insert(0, "nothing to do")
            return work  # no change, no audit event
        rows = {}
        ids = [c.item_id for c in preview.changes]
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            rows.update({r["id"]: r for r in conn.execute(f"{_ROW} WHERE id IN ({marks})", chunk)})
        for change in preview.changes:
            names = self._apply(conn, rows[change.item_id], change, preview.verb, now)
            if names:
                work[change.item_id] = names
        if work:
            self._confirm_owned()
            _hold_files(conn, work, self.actor, now)
        if preview.also is not None:
            preview.also(conn, now)
        preview.applied = True
        preview.event_id = conn.record_event(
            now,
            self.actor,
            preview.verb,
            selection=preview.selection,
            reason=preview.reason,
            affected=preview.item_ids,
            before={c.item_id: c.before for c in preview.changes},
            after={c.item_id: c.after for c in preview.changes},
            result=preview.summary(),
        )
        return work

    @staticmethod
    def _check_named(preview: Preview, named: bool) -> None:
        if named and preview.skipped:
            verb = preview.verb.replace("_", " ")
            why = "; ".join(f"{i} {w}" for i, w in preview.skipped[:5])
            raise VerbError(
                f"{verb} does not apply to {why}"
                f"{' ...' if len(preview.skipped) > 5 else ''}. Nothing was changed; leave "
                f"{'that item' if len(preview.skipped) == 1 else 'those items'} out of the call."
            )

    def _plan(self, verb: str, selection: str, rows: list[sqlite3.Row], plan: Planner) -> Preview:
        preview = Preview(verb, selection)
        for row in rows:
            outcome = plan(row)
            if isinstance(outcome, str):
                preview.skipped.append((row["id"], outcome))
                continue
            values = outcome.values
            after = outcome.shown_after or {
                "stage": values.get("stage", row["stage"]),
                "status": values.get("status", row["status"]),
            }
            preview.changes.append(
                Change(
                    row["id"],
                    row["kind"],
                    {"stage": row["stage"], "status": row["status"]},
                    after,
                    outcome.stages_rerun,
                    outcome.drop_cache,
                    outcome.delete_files,
                    interrupts_run=row["status"] == "running" and "status" in values,
                    plan=outcome,
                    note=outcome.note,
                    lease_token=row["lease_token"],
                )
            )
        return preview

    def _apply(
        self, conn: sqlite3.Connection, row: sqlite3.Row, change: Change, verb: str, now: float
    ) -> list[str]:
        """Write one change; return the entries of the item's folder to remove once it has committed."""
        plan = change.plan
        assert plan is not None
        values = {**plan.values, "updated_at": now}
        if change.interrupts_run:
            values.update(
                lease_owner=None, lease_expires_at=None, cancel_requested=None, cancel_requested_at=None
            )
            conn.close_attempt(
                row["id"],
                row["lease_token"],
                now,
                "cancelled",
                decision=f"taken over by operator verb {verb}",
                spent=False,
            )
        sets = ", ".join(f"{k}=?" for k in values)
        bump = ", lease_token=lease_token+1" if change.interrupts_run else ""
        conn.execute(f"UPDATE items SET {sets}{bump} WHERE id=?", (*values.values(), row["id"]))
        if change.stages_rerun:
            marks = ",".join("?" * len(change.stages_rerun))
            conn.execute(
                f"UPDATE checkpoints SET stale=1 WHERE item_id=? AND stage IN ({marks})",
                (row["id"], *change.stages_rerun),
            )
        # Only what is there: an item with nothing to lose is neither held from claims nor refused.
        item_dir = self.ws.item_dir(row["id"])
        names: list[str] = []
        if change.files_deleted:
            conn.execute("UPDATE checkpoints SET stale=1 WHERE item_id=?", (row["id"],))
            if os.path.lexists(item_dir):
                names.append("")
        elif change.cache_dropped:
            if os.path.lexists(item_dir / "cache"):
                names.append("cache")
            if self.ws.config.recovery.auto_cleanup_failed_files:  # false: the evidence stays (rotated)
                names += _failed_outputs(item_dir)
        if values.get("status") == "queued" and self.ws.config.recovery.auto_cleanup_failed_files:
            names += _failed_outputs(item_dir)
        if plan.skipped_stage:
            conn.execute(
                "INSERT INTO checkpoints (item_id, stage, manifest, created_at, stale) VALUES (?,?,?,?,0)"
                " ON CONFLICT(item_id, stage) DO UPDATE SET manifest=excluded.manifest,"
                " created_at=excluded.created_at, stale=0",
                (row["id"], plan.skipped_stage, json.dumps({"files": [], "skipped": True}), now),
            )
        return list(dict.fromkeys(names))

    # -- the verbs -----------------------------------------------------------------------
    def retry(
        self,
        ids: Iterable[str] | Where | None = None,
        *,
        failed: bool = False,
        group: str | None = None,
        kind: str | None = None,
        reason: str = "",
        dry_run: bool = False,
    ) -> Preview:
        """Retry the current stage now, with a fresh attempt budget (and a clean cache, by policy).
        A discarded item (a dead letter) named here comes back."""
        ids, selection, where, params = self._selection(ids, failed=failed, group=group, kind=kind)
        recovery = self.ws.config.recovery
        drop = recovery.auto_clear_cache_on_retry

        def plan(row):
            if row["status"] not in (*RETRYABLE, DISCARDED):
                return f"is {row['status']}; retry applies to failed, waiting, blocked, stopped or discarded items"
            note = ""
            if not recovery.auto_cleanup_failed_files:
                kept = len(checkpoints.failed_outputs(self.ws.item_dir(row["id"])))
                if kept:
                    note = (
                        f"keeps {kept} failed output(s) .failed-* (auto_cleanup_failed_files = false;"
                        f" the newest {recovery.keep_failed_outputs} are kept)"
                    )
            return Plan(
                _requeue(self.clock.now()),
                [row["next_stage"]] if row["next_stage"] else [],
                drop_cache=drop,
                note=note,
            )

        return self._run(
            "retry",
            selection,
            lambda c: self._select(c, ids, where=where, params=params),
            plan,
            reason,
            dry_run,
            named=_named(ids),
        )

    def resume(
        self, ids: Iterable[str] | Where | None = None, *, reason: str = "", dry_run: bool = False
    ) -> Preview:
        """Continue from the last complete checkpoint, keeping the cache."""
        where = "" if ids is not None else "WHERE status IN ('stopped','failed','blocked','retrying')"

        def plan(row):
            if row["status"] not in RETRYABLE:
                return f"is {row['status']}; resume applies to stopped, failed, waiting or blocked items"
            return Plan(_requeue(self.clock.now()), [row["next_stage"]] if row["next_stage"] else [])

        return self._run(
            "resume",
            _describe(ids, "all stopped and failed"),
            lambda c: self._select(c, ids, where=where),
            plan,
            reason,
            dry_run,
            named=_named(ids),
        )

    def reprocess(
        self,
        ids: Iterable[str] | Where | None = None,
        *,
        from_stage: str | None = None,
        failed: bool = False,
        group: str | None = None,
        reason: str = "",
        dry_run: bool = False,
        verb: str = "reprocess",
        delete_files: bool = False,
    ) -> Preview:
        """Force reprocess from the start (or from `from_stage`), overriding the current state.
        `failed`/`group`: Retry Failed Episodes: caches cleared, errors cleared, from the start."""
        if ids is not None and not isinstance(ids, Where):
            ids = list(ids)
        ids, selection, where, params = self._selection(ids, failed=failed, group=group, kind=None)

        def plan(row):
            order = pipeline.stages_of(row["kind"])
            first = pipeline.first_stage(row["kind"])
            start = from_stage or first
            if start not in order or order.index(start) < order.index(first):
                return (
                    f"has no stage {start!r} to run ({row['kind']} stages: "
                    f"{', '.join(order[order.index(first) :])})"
                )
            if start != first and pipeline.stage_index(row["kind"], row["stage"]) < order.index(start) - 1:
                return (
                    f"has not completed {order[order.index(start) - 1]!r} yet, so it cannot rerun from "
                    f"{start!r}; use reprocess without --from"
                )
            completed = pipeline.previous_stage(row["kind"], start)
            values = {**_requeue(self.clock.now()), **_at_stage(row["kind"], completed)}
            return Plan(values, list(order[order.index(start) :]), drop_cache=True, delete_files=delete_files)

        if from_stage is not None and not any(from_stage in pipeline.stages_of(k) for k in pipeline.KINDS):
            raise VerbError(
                f"{from_stage!r} is not a stage. Episode stages: {', '.join(pipeline.EPISODE_STAGES)};"
                f" clip stages: {', '.join(pipeline.CLIP_STAGES)}."
            )
        selection += f" from {from_stage}" if from_stage else " from the start"
        return self._run(
            verb,
            selection,
            lambda c: self._select(c, ids, where=where, params=params),
            plan,
            reason,
            dry_run,
            named=_named(ids),
            expand=self._redo_clips,
        )

    def reset(
        self,
        ids: Iterable[str] | Where | None = None,
        *,
        all_items: bool = False,
        failed: bool = False,
        reason: str = "",
        dry_run: bool = False,
    ) -> Preview:
        """Reset to discovered: clear results and errors, keep the source; everything after reruns.
        `failed`: Retry Failed Episodes (caches cleared, reset to discovered, errors cleared)."""
        if ids is None and not all_items and not failed:
            raise VerbError(
                "Name the items to reset, or pass --failed (every failed item) or --all (System Reset)."
            )

        def plan(row):
            if row["stage"] is None and row["status"] == "queued":
                return "has not completed discovered yet; nothing to reset"
            order = pipeline.stages_of(row["kind"])
            values = {**_requeue(self.clock.now()), **_at_stage(row["kind"], "discovered")}
            if row["stage"] is None:  # never discovered: start from the start
                values.update(_at_stage(row["kind"], None))
            return Plan(values, list(order[1:]), drop_cache=True)

        if all_items:
            chosen, where, selection = None, "", "all items"
        elif failed:
            chosen, where, selection = None, "WHERE status='failed'", "all failed"
        else:
            chosen, where, selection = ids, "", _describe(ids, "")
        return self._run(
            "reset",
            selection,
            lambda c: self._select(c, chosen, where=where),
            plan,
            reason,
            dry_run,
            named=_named(chosen),
            expand=self._redo_clips,
        )

    def skip(self, ids: Iterable[str] | Where, *, reason: str = "", dry_run: bool = False) -> Preview:
        """Mark the current stage done without running it (an empty checkpoint marked skipped).

        Refused for a stage whose output a later stage reads (it would fail on the missing input every
        attempt), unless the stage declares `skip_fallback = true`."""
        if not isinstance(ids, Where):
            ids = list(ids)
        config = self.ws.config

        def plan(row):
            if row["next_stage"] is None:
                return "is done; there is no stage to skip"
            needs = _needed_by(row["kind"], row["next_stage"], config)
            if needs:
                return (
                    f"cannot skip {row['next_stage']}: {needs} reads its output and would fail without it."
                    f" Retry or fix {row['next_stage']} instead, or declare skip_fallback = true under"
                    f" [stages.{row['kind']}.{row['next_stage']}] if later stages cope without it"
                )
            values = {**_requeue(self.clock.now()), **_at_stage(row["kind"], row["next_stage"])}
            return Plan(values, skipped_stage=row["next_stage"])

        return self._run(
            "skip",
            _describe(ids, ""),
            lambda c: self._select(c, ids),
            plan,
            reason,
            dry_run,
            named=_named(ids),
        )

    def rollback(self, item_id: str, to_stage: str, *, reason: str = "", dry_run: bool = False) -> Preview:
        """Move `stage` back to an earlier checkpoint; later checkpoints become stale and rerun."""

        def plan(row):
            order = pipeline.stages_of(row["kind"])
            if to_stage not in order:
                raise VerbError(
                    f"{row['id']} has no stage {to_stage!r} ({row['kind']} stages: {', '.join(order)})."
                )
            if row["stage"] == to_stage:
                raise VerbError(f"{row['id']} is already at {to_stage!r}; nothing to roll back.")
            if pipeline.stage_index(row["kind"], row["stage"]) < order.index(to_stage):
                raise VerbError(
                    f"Cannot roll {row['id']} back to {to_stage!r}: its last completed stage is "
                    f"{row['stage'] or 'none'}, so that would be a move forward. Pick an earlier stage, "
                    "or use skip to move forward."
                )
            values = {**_requeue(self.clock.now()), **_at_stage(row["kind"], to_stage)}
            return Plan(values, list(order[order.index(to_stage) + 1 :]))

        return self._run(
            "rollback",
            f"{item_id} to {to_stage}",
            lambda c: self._select(c, [item_id]),
            plan,
            reason,
            dry_run,
            named=True,
            expand=self._redo_clips,
        )

    def clear_cache(self, ids: Iterable[str] | Where, *, reason: str = "", dry_run: bool = False) -> Preview:
        """Remove an item's cache (and kept partial outputs); its state is not changed."""
        if not isinstance(ids, Where):
            ids = list(ids)

        def plan(row):
            if row["status"] == "running":
                return "is running; stop it first so its stage does not lose files under it"
            return Plan({}, drop_cache=True)

        return self._run(
            "clear_cache",
            _describe(ids, ""),
            lambda c: self._select(c, ids),
            plan,
            reason,
            dry_run,
            named=_named(ids),
        )

    def discard(self, ids: Iterable[str] | Where, *, reason: str = "", dry_run: bool = False) -> Preview:
        """Dead letters: archive failed items. They are kept (errors, attempts, files), hidden from
        lists and counts by default (`ewg status --all` shows them), and `retry` brings them back."""
        if not isinstance(ids, Where):
            ids = list(ids)

        def plan(row):
            if row["status"] != "failed":
                return f"is {row['status']}; only failed items can be discarded"
            return Plan({"status": DISCARDED, "next_attempt_at": 0.0})

        return self._run(
            "discard",
            _describe(ids, ""),
            lambda c: self._select(c, ids),
            plan,
            reason,
            dry_run,
            named=_named(ids),
        )

    def stop(
        self,
        ids: Iterable[str] | Where | None = None,
        *,
        force: bool = False,
        reason: str = "",
        dry_run: bool = False,
    ) -> Preview:
        """Stop items (they wait for resume), or with no ids stop processing: pause the engine and
        release running work at a safe point (or now, with force) so `unpause` continues it."""
        ids_list = ids if (ids is None or isinstance(ids, Where)) else list(ids)
        every = ids_list is None
        now = self.clock.now()
        if every:
            request = "force_release" if force else "release"
        else:
            request = "force" if force else "stop"
        if every:
            shown = (
                "released now, continues on unpause"
                if force
                else "released at a safe point, continues on unpause"
            )
        else:
            shown = "stopped now (subprocess killed)" if force else "stopped at a safe point"

        def plan(row):
            if row["status"] == "running":
                return Plan(
                    {"cancel_requested": request, "cancel_requested_at": now},
                    shown_after={"stage": row["stage"], "status": shown},
                )
            if every:
                return "is not running"
            if row["status"] in ("queued", "retrying", "blocked"):
                return Plan({"status": "stopped", "next_attempt_at": now})
            return f"is {row['status']}; only running or waiting items can be stopped"

        where = "WHERE status='running'" if every else ""
        verb = "force_stop" if force else "stop"
        preview = self._run(
            verb,
            _describe(ids_list, "all running work"),
            lambda c: self._select(c, ids_list, where=where),
            plan,
            reason,
            dry_run,
            named=_named(ids_list),
            also=(lambda conn, at: self._set_paused(conn, "1", reason or "stop processing", at))
            if every
            else None,
        )
        if every:
            preview.notes.insert(0, "engine paused: no new work is claimed until unpause")
        return preview

    def extend(self, item_id: str, seconds: float, *, reason: str = "", dry_run: bool = False) -> Preview:
        """Wait longer: push the stage's timeout and stall thresholds out by `seconds`."""
        if not math.isfinite(seconds) or seconds <= 0:  # NaN would pass `<= 0` and break the NOT NULL column
            raise VerbError(f"Extend by a positive, finite number of seconds (got {seconds}).")

        def plan(row):
            if row["status"] != "running":
                return f"is {row['status']}; only running items have a timeout to extend"
            values = {"deadline_extension": (row["deadline_extension"] or 0) + seconds, "verdict": None}
            if row["cancel_requested"] in ("timeout", "stall"):
                values.update(cancel_requested=None, cancel_requested_at=None)
            return Plan(values)

        return self._run(
            "extend",
            f"{item_id} by {seconds:.0f} s",
            lambda c: self._select(c, [item_id]),
            plan,
            reason,
            dry_run,
            named=True,
        )

    def pause(self, *, reason: str = "", dry_run: bool = False) -> Preview:
        return self._switch("pause", "1", reason, dry_run)

    def unpause(self, *, reason: str = "", dry_run: bool = False) -> Preview:
        preview = self._switch("unpause", "", reason, dry_run)
        return preview

    def _switch(self, verb: str, value: str, reason: str, dry_run: bool) -> Preview:
        reason = check_reason(reason)
        now = self.clock.now()
        preview = Preview(verb, "engine")
        row = self.store.read_one("SELECT value FROM engine_state WHERE key='paused'")
        current = row["value"] if row else ""
        preview.notes.append(
            f"engine {'paused' if current else 'running'} -> {'paused' if value else 'running'}"
        )
        if dry_run:
            return preview
        with self.store.write() as conn:
            self._set_paused(conn, value, reason, now)
            preview.event_id = conn.record_event(
                now, self.actor, verb, selection="engine", reason=reason, result=preview.notes[0]
            )
        preview.applied = True
        return preview

    def _set_paused(self, conn: sqlite3.Connection, value: str, reason: str, now: float) -> None:
        conn.execute(
            "INSERT INTO engine_state (key, value, reason, actor, at) VALUES ('paused',?,?,?,?)"
            " ON CONFLICT(key) DO UPDATE SET value=excluded.value, reason=excluded.reason,"
            " actor=excluded.actor, at=excluded.at",
            (value, reason, self.actor, now),
        )

    def _redo_clips(self, conn: sqlite3.Connection, preview: Preview) -> None:
        """An episode that reruns editorial has clips born of the old run: they wait (stopped) for the
        new editorial, which redoes those it picks again and discards those it no longer picks."""
        parents = [
            c.item_id for c in preview.changes if c.kind == pipeline.EPISODE and "editorial" in c.stages_rerun
        ]
        if not parents:
            return
        taken = set(preview.item_ids)
        now = self.clock.now()
        for chunk in _chunks(parents, 500):
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"{_ROW} WHERE kind='clip' AND parent_id IN ({marks}) AND status <> 'discarded' ORDER BY id",
                chunk,
            ).fetchall()
            for row in rows:
                if row["id"] in taken:
                    continue
                values = {
                    **_requeue(now),
                    **_at_stage(pipeline.CLIP, "discovered"),
                    "status": "stopped",
                    "blocked_reason": AWAITS_EDITORIAL,
                }
                plan = Plan(values, list(pipeline.CLIP_STAGES[1:]))
                preview.changes.append(
                    Change(
                        row["id"],
                        row["kind"],
                        {"stage": row["stage"], "status": row["status"]},
                        {"stage": "discovered", "status": "stopped"},
                        plan.stages_rerun,
                        interrupts_run=row["status"] == "running",
                        plan=plan,
                        note=f"{AWAITS_EDITORIAL} ({row['parent_id']}): redone if picked again, else discarded",
                        lease_token=row["lease_token"],
                    )
                )

    def deep_clean(self, *, reason: str = "", dry_run: bool = False, vacuum: bool = True) -> Preview:
        """Sweep orphan folders, temporary files, stale checkpoints and dead leases; vacuum the database.

        Only in an items root this database owns, and only what looks like ewg's (engine/ownership.py):
        the leftovers and stale checkpoints of known items, and folders no item names whose every entry
        is what ewg puts in an item folder. The files go after the commit."""
        reason = check_reason(reason)
        preview = Preview("deep_clean", "workspace")
        root = self.ws.items_root
        self._confirm_owned()
        known = self.ws.known_ids()
        live = {
            (r["id"], r["lease_token"])
            for r in self.store.read("SELECT id, lease_token FROM items WHERE status='running'")
        }
        work: FileWork = {}
        foreign: list[str] = []
        if root.exists():
            for entry in sorted(root.iterdir()):
                if entry.name in known or entry.name == ownership.ITEMS_MARKER:
                    continue
                if ownership.looks_like_item_dir(entry):
                    work[entry.name] = [""]
                else:
                    foreign.append(entry.name)
        for path, item_id, _stage, token in checkpoints.leftovers(root):
            if item_id not in known or path.parent.is_symlink():
                continue
            if not (path.name.startswith(checkpoints.TMP_PREFIX) and (item_id, token) in live):
                work.setdefault(item_id, []).append(path.name)
        kept_failed = {p.parent.name for p in root.glob(f"*/{FAILED_OUTPUTS}")} if root.exists() else set()
        for item_id in sorted(kept_failed & known):
            work.setdefault(item_id, []).append(FAILED_OUTPUTS)
        stale = self.store.read("SELECT item_id, stage FROM checkpoints WHERE stale=1")
        for r in stale:
            if r["item_id"] in known and (self.ws.item_dir(r["item_id"]) / r["stage"]).exists():
                work.setdefault(r["item_id"], []).append(r["stage"])
        failed_caches = [  # Deep Clean also clears the caches of failed (and discarded) items
            r["id"]
            for r in self.store.read("SELECT id FROM items WHERE status IN ('failed','discarded')")
            if r["id"] in known and (self.ws.item_dir(r["id"]) / "cache").is_dir()
        ]
        for item_id in failed_caches:
            work.setdefault(item_id, []).append("cache")
        doomed = [
            self.ws.item_dir(item_id) / name if name else self.ws.item_dir(item_id)
            for item_id, names in work.items()
            for name in names
        ]
        # Stale state: what only a running attempt may hold, left on rows that are not running.
        leftover = self.store.read(
            "SELECT id FROM items WHERE status <> 'running' AND (lease_owner IS NOT NULL"
            " OR cancel_requested IS NOT NULL OR verdict IS NOT NULL OR lease_expires_at IS NOT NULL)"
        )
        dead = [
            r
            for r in self.store.read(
                "SELECT id, lease_owner, lease_token, rescues, stage_pid, stage_pgid FROM items"
                " WHERE status='running'"
            )
            if owner_alive(r["lease_owner"] or "") is False
        ]
        preview.notes.append(
            f"{len(doomed)} folder(s) to delete ({len(failed_caches)} cache(s) of failed items), "
            f"{len(stale)} stale checkpoint record(s), {len(leftover)} item(s) with stale run state to reset, "
            f"{len(dead)} lease(s) of dead processes to rescue" + (", then VACUUM" if vacuum else "")
        )
        preview.notes += [f"delete {p}" for p in doomed[:50]]
        if foreign:
            preview.notes.append(
                f"left alone: {len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'} of {root} that ewg did "
                f"not make: {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}"
            )
        preview.changes = [Change(r["id"], "", {"status": "running"}, {"status": "queued"}) for r in dead]
        if dry_run:
            return preview
        now = self.clock.now()
        for r in dead:  # a dead owner's stage processes end before its item can run again
            groups.kill_recorded(
                r["stage_pid"],
                r["stage_pgid"],
                groups.lease_marker(r["lease_owner"], r["id"], r["lease_token"]),
                self.ws.config.engine.force_grace,
            )
        with self.store.write() as conn:
            for r in dead:
                conn.release(
                    r["id"],
                    r["lease_token"],
                    now,
                    "dead",
                    "queued",
                    "rescued by deep clean: owner process is gone",
                    bump=True,
                    verdict="DEAD",
                )
            conn.execute("DELETE FROM checkpoints WHERE stale=1")
            for chunk in _chunks([r["id"] for r in leftover], 500):
                conn.execute(
                    "UPDATE items SET lease_owner=NULL, lease_expires_at=NULL, cancel_requested=NULL,"
                    " cancel_requested_at=NULL, verdict=NULL WHERE status <> 'running'"
                    f" AND id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
            _hold_files(conn, work, self.actor, now)
            preview.event_id = conn.record_event(
                now,
                self.actor,
                "deep_clean",
                selection="workspace",
                reason=reason,
                affected=[r["id"] for r in dead],
                result=preview.notes[0],
            )
        _remove_files(self.ws, work)
        if vacuum:
            self.store.vacuum()
        preview.applied = True
        return preview

    # -- clip verbs ----------------------------------------------------------------------
    def retry_clips(self, ids: Iterable[str], *, reason: str = "", dry_run: bool = False) -> Preview:
        return self.retry(self._clip_ids(ids), reason=reason, dry_run=dry_run)

    def rerender_clips(self, ids: Iterable[str], *, reason: str = "", dry_run: bool = False) -> Preview:
        return self.reprocess(
            self._clip_ids(ids), from_stage="rendered", reason=reason, dry_run=dry_run, verb="rerender_clips"
        )

    def delete_and_retry_clips(
        self, ids: Iterable[str], *, reason: str = "", dry_run: bool = False
    ) -> Preview:
        return self.reprocess(
            self._clip_ids(ids),
            from_stage="generated",
            reason=reason,
            dry_run=dry_run,
            verb="delete_and_retry_clips",
            delete_files=True,
        )

    def retry_all_failed_clips(self, *, reason: str = "", dry_run: bool = False) -> Preview:
        return self.retry(failed=True, kind=pipeline.CLIP, reason=reason, dry_run=dry_run)

    def regenerate_all_clips(
        self, episode_ids: Iterable[str] | None = None, *, reason: str = "", dry_run: bool = False
    ) -> Preview:
        ids = self._clips_of(episode_ids)
        if not ids:
            raise VerbError(
                "There are no clips to regenerate yet; clips appear after an episode's editorial stage."
            )
        return self.reprocess(
            ids, from_stage="generated", reason=reason, dry_run=dry_run, verb="regenerate_all_clips"
        )

    def clean_and_retry_clips(
        self, ids: Iterable[str] | None = None, *, reason: str = "", dry_run: bool = False
    ) -> Preview:
        if ids is None:
            ids = [
                r["id"] for r in self.store.read("SELECT id FROM items WHERE kind='clip' AND status='failed'")
            ]
            ids = _Found(ids)  # none: nothing to do
        return self.reprocess(
            self._clip_ids(ids),
            from_stage="generated",
            reason=reason,
            dry_run=dry_run,
            verb="clean_and_retry_clips",
            delete_files=True,
        )

    def _clip_ids(self, ids: Iterable[str]) -> list[str]:
        found = isinstance(ids, _Found)
        ids = _Found(ids) if found else list(ids)
        rows = (
            self.store.read(f"SELECT id, kind FROM items WHERE id IN ({','.join('?' * len(ids))})", ids)
            if ids
            else []
        )
        not_clips = [r["id"] for r in rows if r["kind"] != pipeline.CLIP]
        if not_clips:
            raise VerbError(
                f"{', '.join(not_clips[:5])} {'is' if len(not_clips) == 1 else 'are'} not a clip; "
                "clip verbs take clip ids (EPISODE__cNN)."
            )
        return ids

    def _clips_of(self, episode_ids: Iterable[str] | None) -> list[str]:
        if episode_ids is None:
            return [r["id"] for r in self.store.read("SELECT id FROM items WHERE kind='clip' ORDER BY id")]
        eps = list(episode_ids)
        return [
            r["id"]
            for r in self.store.read(
                f"SELECT id FROM items WHERE kind='clip' AND parent_id IN ({','.join('?' * len(eps))}) ORDER BY id",
                eps,
            )
        ]

    def _selection(self, ids, *, failed: bool, group: str | None, kind: str | None):
        kind_sql = f" AND kind='{kind}'" if kind in pipeline.KINDS else ""
        if isinstance(ids, Where):
            return ids, ids.text, "", ()
        if group is not None:
            return _Found(self.failure_group_ids(group)), f"failure group {group}", "", ()
        if failed:
            return (
                None,
                f"all failed{' ' + kind + 's' if kind else ''}",
                f"WHERE status='failed'{kind_sql}",
                (),
            )
        if ids is None:
            raise VerbError(
                "Name the items, or use --failed for all failed items, --group FINGERPRINT or --where."
            )
        ids = list(ids)
        return ids, _describe(ids, ""), "", ()


class _Found(list):
    """Ids a selection found (a failure group), as opposed to ids a person named: one the verb does not
    apply to is left out, and none at all is "nothing to do"."""


def _named(ids) -> bool:
    """Ids a person named: a verb that does not apply to one of them is a mistake in the call."""
    return ids is not None and not isinstance(ids, (Where, _Found))


def _requeue(now: float) -> dict:
    return {
        "status": "queued",
        "next_attempt_at": now,
        "attempts": 0,
        "rescues": 0,
        "error_class": None,
        "error_message": None,
        "error_detail": None,
        "error_suggestion": None,
        "error_at": None,
        "verdict": None,
        "blocked_reason": None,
        "progress": 0.0,
        "progress_message": "",
    }


def _at_stage(kind: str, completed: str | None) -> dict:
    nxt = pipeline.next_stage(kind, completed)
    return {"stage": completed, "next_stage": nxt, **({"status": "done"} if nxt is None else {})}


FAILED_OUTPUTS = ".failed-*"  # partial outputs kept by auto_cleanup_failed_files = false


def _failed_outputs(item_dir: Path) -> list[str]:
    return [FAILED_OUTPUTS] if next(item_dir.glob(FAILED_OUTPUTS), None) is not None else []


def _hold_files(conn: sqlite3.Connection, work: FileWork, actor: str, now: float) -> None:
    """Inside the verb's transaction: mark each item's files pending removal, so no claim starts the
    item before `_remove_files` has run (a crash in between is finished by `finish_pending_removals`)."""
    owner = owner_id()
    for item_id, names in work.items():
        key = PENDING_FILES + item_id
        row = conn.execute("SELECT value FROM engine_state WHERE key=?", (key,)).fetchone()
        if row is not None:  # an earlier removal that has not run yet: this one does both
            names = work[item_id] = list(dict.fromkeys([*_pending_names(row["value"]), *names]))
        conn.execute(
            "INSERT INTO engine_state (key, value, reason, actor, at) VALUES (?,?,?,?,?)"
            " ON CONFLICT(key) DO UPDATE SET value=excluded.value, reason=excluded.reason,"
            " actor=excluded.actor, at=excluded.at",
            (key, json.dumps({"owner": owner, "names": names}), "files pending removal", actor, now),
        )


def _pending_names(value: str) -> list[str]:
    try:
        names = json.loads(value).get("names", [])
    except (ValueError, AttributeError):
        return []
    return [n for n in names if isinstance(n, str) and "/" not in n and n not in (".", "..")]


def _remove_files(ws: Workspace, work: FileWork) -> None:
    """After the commit: remove what the verb planned, then let the items be claimed again."""
    if not work:
        return
    for item_id, names in work.items():
        ownership.remove_in_item(ws.item_dir(item_id), names)
    owner = owner_id()
    with ws.store.write() as conn:
        for item_id in work:
            conn.execute(
                "DELETE FROM engine_state WHERE key=? AND json_extract(value, '$.owner')=?",
                (PENDING_FILES + item_id, owner),
            )


def _pending_rows(ws: Workspace) -> list[sqlite3.Row]:
    return ws.store.read(
        "SELECT key, value, at FROM engine_state WHERE key >= ? AND key < ?",
        (PENDING_FILES, PENDING_FILES[:-1] + chr(ord(PENDING_FILES[-1]) + 1)),
    )


def _orphaned(ws: Workspace, row: sqlite3.Row, now: float) -> bool:
    """The verb process that holds this removal is gone (or, on another host, silent for a lease)."""
    try:
        owner = str(json.loads(row["value"]).get("owner", ""))
    except (ValueError, AttributeError):
        owner = ""
    alive = owner_alive(owner)
    return not alive and (alive is False or now - row["at"] >= ws.config.engine.lease_duration)


def orphaned_removals(ws: Workspace) -> list[str]:
    """Items held from claims by the file removal of a verb process that died after its commit."""
    now = ws.clock.now()
    return [r["key"][len(PENDING_FILES) :] for r in _pending_rows(ws) if _orphaned(ws, r, now)]


def finish_pending_removals(ws: Workspace) -> int:
    """Finish the file removals of verbs whose process died after their commit (or, on another host,
    stopped for longer than a lease); the items they hold become claimable again."""
    now = ws.clock.now()
    done = 0
    for row in _pending_rows(ws):
        if not _orphaned(ws, row, now):
            continue  # its own process is still at it
        ws.confirm_owned()
        ownership.remove_in_item(ws.item_dir(row["key"][len(PENDING_FILES) :]), _pending_names(row["value"]))
        with ws.store.write() as conn:
            conn.execute("DELETE FROM engine_state WHERE key=? AND value=?", (row["key"], row["value"]))
        done += 1
    return done


def _describe(ids, default: str) -> str:
    if ids is None:
        return default
    if isinstance(ids, Where):
        return ids.text
    ids = list(ids)
    return ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def _chunks(seq: list, n: int):
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"
