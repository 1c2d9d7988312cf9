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
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import checkpoints, errors, ownership, pipeline, transitions
from .owners import owner_alive, owner_id
from .stages import groups
from .workspace import Workspace

ACTIVE = ("queued", "retrying", "blocked", "running")
# engine_state key of an item whose files a committed verb has still to remove; Store.claim_batch
# skips such an item, so no attempt starts in a folder that is about to lose files.
PENDING_FILES = "files:"
FileWork = dict[str, list[str]]  # item id -> entries of its folder to remove ("" the folder, "*" patterns)
RETRYABLE = ("failed", "retrying", "blocked", "stopped")


class VerbError(Exception):
    """The request cannot be carried out as asked; the message says why and what to do instead."""


@dataclass
class Plan:
    """What a verb would do to one item."""

    values: dict  # new column values
    stages_rerun: list[str] = field(default_factory=list)
    drop_cache: bool = False
    delete_files: bool = False
    skipped_stage: str | None = None  # record an empty "skipped" checkpoint for this stage


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

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "plan"}


@dataclass
class Preview:
    verb: str
    selection: str
    changes: list[Change] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item id, why the verb does not apply)
    applied: bool = False
    event_id: int | None = None
    notes: list[str] = field(default_factory=list)

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
    " error_message, attempts, deadline_extension, cancel_requested FROM items"
)


class Operator:
    """Carries out verbs on a workspace as one person (the OS user unless told otherwise)."""

    def __init__(self, ws: Workspace, actor: str | None = None) -> None:
        self.ws = ws
        self.store = ws.store
        self.clock = ws.clock
        self.actor = actor or _os_user()

    # -- selections ----------------------------------------------------------------------
    def _select(
        self,
        conn: sqlite3.Connection,
        ids: Iterable[str] | None = None,
        *,
        where: str = "",
        params: tuple = (),
    ) -> list[sqlite3.Row]:
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
        return conn.execute(f"{_ROW} {where} ORDER BY id", params).fetchall()

    def failure_group_ids(self, fingerprint: str) -> list[str]:
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
        if not ids:
            raise VerbError(f"No failed items in group {fingerprint!r}. `ewg failures` lists the groups.")
        return ids

    # -- the engine of every verb ----------------------------------------------------------
    def _run(
        self,
        verb: str,
        selection: str,
        select: Callable[[sqlite3.Connection], list[sqlite3.Row]],
        plan: Planner,
        reason: str,
        dry_run: bool,
    ) -> Preview:
        now = self.clock.now()
        if dry_run:
            conn = self.store.connection()
            return self._plan(verb, selection, select(conn), plan)
        try:
            finish_pending_removals(self.ws)
        except ownership.OwnershipError as exc:
            raise VerbError(str(exc)) from None
        work: FileWork = {}
        with self.store.write() as conn:
            rows = select(conn)
            preview = self._plan(verb, selection, rows, plan)
            by_id = {r["id"]: r for r in rows}
            for change in preview.changes:
                names = self._apply(conn, by_id[change.item_id], change, verb, now)
                if names:
                    work[change.item_id] = names
            if work:
                self._confirm_owned()
                _hold_files(conn, work, self.actor, now)
            preview.applied = True
            preview.event_id = transitions.record_event(
                conn,
                now,
                self.actor,
                verb,
                selection=selection,
                reason=reason,
                affected=preview.item_ids,
                before={c.item_id: c.before for c in preview.changes},
                after={c.item_id: c.after for c in preview.changes},
                result=preview.summary(),
            )
        _remove_files(self.ws, work)  # only now that the change is committed
        return preview

    def _confirm_owned(self) -> None:
        try:
            self.ws.confirm_owned()
        except ownership.OwnershipError as exc:
            raise VerbError(str(exc)) from None

    def _plan(self, verb: str, selection: str, rows: list[sqlite3.Row], plan: Planner) -> Preview:
        preview = Preview(verb, selection)
        for row in rows:
            outcome = plan(row)
            if isinstance(outcome, str):
                preview.skipped.append((row["id"], outcome))
                continue
            values = outcome.values
            after = {
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
            transitions.close_attempt(
                conn,
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
        ids: Iterable[str] | None = None,
        *,
        failed: bool = False,
        group: str | None = None,
        kind: str | None = None,
        reason: str = "",
        dry_run: bool = False,
    ) -> Preview:
        """Retry the current stage now, with a fresh attempt budget (and a clean cache, by policy)."""
        ids, selection, where, params = self._selection(ids, failed=failed, group=group, kind=kind)
        drop = self.ws.config.recovery.auto_clear_cache_on_retry

        def plan(row):
            if row["status"] not in RETRYABLE:
                return f"is {row['status']}; retry applies to failed, waiting, blocked or stopped items"
            return Plan(
                _requeue(self.clock.now()), [row["next_stage"]] if row["next_stage"] else [], drop_cache=drop
            )

        return self._run(
            "retry",
            selection,
            lambda c: self._select(c, ids, where=where, params=params),
            plan,
            reason,
            dry_run,
        )

    def resume(self, ids: Iterable[str] | None = None, *, reason: str = "", dry_run: bool = False) -> Preview:
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
        )

    def reprocess(
        self,
        ids: Iterable[str],
        *,
        from_stage: str | None = None,
        reason: str = "",
        dry_run: bool = False,
        verb: str = "reprocess",
        delete_files: bool = False,
    ) -> Preview:
        """Force reprocess from the start (or from `from_stage`), overriding the current state."""
        ids = list(ids)

        def plan(row):
            order = pipeline.stages_of(row["kind"])
            start = from_stage or order[0]
            if start not in order:
                return f"has no stage {start!r} ({row['kind']} stages: {', '.join(order)})"
            if start != order[0] and pipeline.stage_index(row["kind"], row["stage"]) < order.index(start) - 1:
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
        selection = _describe(ids, "") + (f" from {from_stage}" if from_stage else " from the start")
        return self._run(verb, selection, lambda c: self._select(c, ids), plan, reason, dry_run)

    def reset(
        self,
        ids: Iterable[str] | None = None,
        *,
        all_items: bool = False,
        reason: str = "",
        dry_run: bool = False,
    ) -> Preview:
        """Reset to discovered: clear results and errors, keep the source; everything after reruns."""
        if ids is None and not all_items:
            raise VerbError("Name the items to reset, or pass --all to reset every item (System Reset).")

        def plan(row):
            if row["stage"] is None and row["status"] == "queued":
                return "has not completed discovered yet; nothing to reset"
            order = pipeline.stages_of(row["kind"])
            values = {**_requeue(self.clock.now()), **_at_stage(row["kind"], "discovered")}
            if row["stage"] is None:  # never discovered: start from the start
                values.update(_at_stage(row["kind"], None))
            return Plan(values, list(order[1:]), drop_cache=True)

        return self._run(
            "reset",
            _describe(None if all_items else ids, "all items"),
            lambda c: self._select(c, None if all_items else ids),
            plan,
            reason,
            dry_run,
        )

    def skip(self, ids: Iterable[str], *, reason: str = "", dry_run: bool = False) -> Preview:
        """Mark the current stage done without running it (an empty checkpoint marked skipped)."""
        ids = list(ids)

        def plan(row):
            if row["next_stage"] is None:
                return "is done; there is no stage to skip"
            values = {**_requeue(self.clock.now()), **_at_stage(row["kind"], row["next_stage"])}
            return Plan(values, skipped_stage=row["next_stage"])

        return self._run("skip", _describe(ids, ""), lambda c: self._select(c, ids), plan, reason, dry_run)

    def rollback(self, item_id: str, to_stage: str, *, reason: str = "", dry_run: bool = False) -> Preview:
        """Move `stage` back to an earlier checkpoint; later checkpoints become stale and rerun."""

        def plan(row):
            order = pipeline.stages_of(row["kind"])
            if to_stage not in order:
                return f"has no stage {to_stage!r} ({row['kind']} stages: {', '.join(order)})"
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
        )

    def clear_cache(self, ids: Iterable[str], *, reason: str = "", dry_run: bool = False) -> Preview:
        """Remove an item's cache (and kept partial outputs); its state is not changed."""
        ids = list(ids)

        def plan(row):
            if row["status"] == "running":
                return "is running; stop it first so its stage does not lose files under it"
            return Plan({}, drop_cache=True)

        return self._run(
            "clear_cache", _describe(ids, ""), lambda c: self._select(c, ids), plan, reason, dry_run
        )

    def stop(
        self,
        ids: Iterable[str] | None = None,
        *,
        force: bool = False,
        reason: str = "",
        dry_run: bool = False,
    ) -> Preview:
        """Stop items (they wait for resume), or with no ids stop processing: pause the engine and
        release running work at a safe point so `unpause` continues it."""
        ids_list = None if ids is None else list(ids)
        now = self.clock.now()
        request = (
            ("force" if force else "stop") if ids_list is not None else ("force" if force else "release")
        )

        def plan(row):
            if row["status"] == "running":
                return Plan({"cancel_requested": request, "cancel_requested_at": now})
            if ids_list is None:
                return "is not running"
            if row["status"] in ("queued", "retrying", "blocked"):
                return Plan({"status": "stopped", "next_attempt_at": now})
            return f"is {row['status']}; only running or waiting items can be stopped"

        where = "WHERE status='running'" if ids_list is None else ""
        verb = "force_stop" if force else "stop"
        if ids_list is None and not dry_run:
            self.pause(reason=reason or "stop processing")
        return self._run(
            verb,
            _describe(ids_list, "all running work"),
            lambda c: self._select(c, ids_list, where=where),
            plan,
            reason,
            dry_run,
        )

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
        )

    def pause(self, *, reason: str = "", dry_run: bool = False) -> Preview:
        return self._switch("pause", "1", reason, dry_run)

    def unpause(self, *, reason: str = "", dry_run: bool = False) -> Preview:
        preview = self._switch("unpause", "", reason, dry_run)
        return preview

    def _switch(self, verb: str, value: str, reason: str, dry_run: bool) -> Preview:
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
            conn.execute(
                "INSERT INTO engine_state (key, value, reason, actor, at) VALUES ('paused',?,?,?,?)"
                " ON CONFLICT(key) DO UPDATE SET value=excluded.value, reason=excluded.reason,"
                " actor=excluded.actor, at=excluded.at",
                (value, reason, self.actor, now),
            )
            preview.event_id = transitions.record_event(
                conn, now, self.actor, verb, selection="engine", reason=reason, result=preview.notes[0]
            )
        preview.applied = True
        return preview

    def deep_clean(self, *, reason: str = "", dry_run: bool = False, vacuum: bool = True) -> Preview:
        """Sweep orphan folders, temporary files, stale checkpoints and dead leases; vacuum the database.

        Only in an items root this database owns, and only what looks like ewg's (engine/ownership.py):
        the leftovers and stale checkpoints of known items, and folders no item names whose every entry
        is what ewg puts in an item folder. The files go after the commit."""
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
        doomed = [
            self.ws.item_dir(item_id) / name if name else self.ws.item_dir(item_id)
            for item_id, names in work.items()
            for name in names
        ]
        dead = [
            r
            for r in self.store.read(
                "SELECT id, lease_owner, lease_token, rescues, stage_pid, stage_pgid FROM items"
                " WHERE status='running'"
            )
            if owner_alive(r["lease_owner"] or "") is False
        ]
        preview.notes.append(
            f"{len(doomed)} folder(s) to delete, {len(stale)} stale checkpoint record(s), "
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
                transitions.release(
                    conn,
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
            _hold_files(conn, work, self.actor, now)
            preview.event_id = transitions.record_event(
                conn,
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
            if not ids:
                raise VerbError("No failed clips to clean and retry.")
        return self.reprocess(
            self._clip_ids(ids),
            from_stage="generated",
            reason=reason,
            dry_run=dry_run,
            verb="clean_and_retry_clips",
            delete_files=True,
        )

    def _clip_ids(self, ids: Iterable[str]) -> list[str]:
        ids = list(ids)
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
        if group is not None:
            return self.failure_group_ids(group), f"failure group {group}", "", ()
        if failed:
            return (
                None,
                f"all failed{' ' + kind + 's' if kind else ''}",
                f"WHERE status='failed'{kind_sql}",
                (),
            )
        if ids is None:
            raise VerbError(
                "Name the items to retry, or use --failed for all failed items or --group FINGERPRINT."
            )
        ids = list(ids)
        return ids, _describe(ids, ""), "", ()


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
