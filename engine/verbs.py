"""Operator verbs (ARCHITECTURE.md contract 8): the only way people change work.

Every verb takes a selection, can return a preview (which items change, which
stages rerun, which caches go) without changing anything, and when applied
does it in one transaction that also writes one audit event (who, when, verb,
selection, reason, before/after). A running item that a verb takes over is
fenced out by bumping its lease token, so its worker's late writes are refused.
The console and the CLI call these; neither writes the database itself, and
neither does this module: its SQL is the repository's (engine/db/operator.py),
where a verb plans from rows locked for its unit and each item change is a
compare-and-swap on what it planned, so an item that another host's worker
moved in between is reported as changed, never overwritten.
"""

from __future__ import annotations

import getpass
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import checkpoints, errors, ownership, pipeline
from .db import operator as ops
from .db.operator import ItemFilter, ItemState, PendingRemoval, Unlocked
from .owners import owner_alive, owner_id
from .stages import groups
from .text import is_utf8
from .workspace import Workspace

if TYPE_CHECKING:
    from .db.unit import Unit

    Rows = Unit | Unlocked  # a verb's selections: locked in its unit, or unlocked for a dry run

ACTIVE = ("queued", "retrying", "blocked", "running")
# engine_state key of an item whose files a committed verb has still to remove; Store.claim_batch
# skips such an item, so no attempt starts in a folder that is about to lose files.
PENDING_FILES = ops.PENDING_FILES
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
    also: Callable[[Unit, float], None] | None = field(default=None, repr=False)

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


Planner = Callable[[ItemState], "Plan | str"]  # a Plan, or why the verb does not apply to the item
CHANGED = "changed since the verb planned it (another worker or operator moved it); not touched"


@dataclass(frozen=True)
class Where:
    """A selection by filter (`--where status=failed stage=transcribed ...`), as the person wrote it."""

    filter: ItemFilter
    text: str


_WHERE_KEYS = ("status", "stage", "show", "class", "kind", "older-than")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")


def parse_where(terms: Iterable[str], now: float) -> Where:
    """`status=failed,retrying stage=transcribed show=tech class=transient kind=clip older-than=2h`.

    Discarded items are left out unless `status=discarded` names them."""
    from .db.queries import STATUSES

    tests: list[ops.Term] = []
    shown: list[str] = []
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
            if not values:
                raise VerbError(
                    f"--where {word!r}: give at least one value after {key}= (commas separate them)."
                )
            if key == "status":
                known = (*STATUSES, DISCARDED)
                bad = [v for v in values if v not in known]
                if bad:
                    raise VerbError(
                        f"--where status={bad[0]!r} is not a status; statuses: {', '.join(known)}."
                    )
                tests.append(ops.Term("status", values))
            elif key == "stage":
                every = {s for k in pipeline.KINDS for s in pipeline.stages_of(k)}
                bad = [v for v in values if v not in every]
                if bad:
                    raise VerbError(
                        f"--where stage={bad[0]!r} is not a stage. Episode stages: "
                        f"{', '.join(pipeline.EPISODE_STAGES)}; clip stages: {', '.join(pipeline.CLIP_STAGES)}."
                    )
                tests.append(ops.Term("stage", values))
            elif key == "show":
                tests.append(ops.Term("show", values))
            elif key == "class":
                bad = [v for v in values if v not in errors.ERROR_CLASSES]
                if bad:
                    raise VerbError(
                        f"--where class={bad[0]!r} is not an error class; classes: {', '.join(errors.ERROR_CLASSES)}."
                    )
                tests.append(ops.Term("error_class", values))
            elif key == "kind":
                bad = [v for v in values if v not in pipeline.KINDS]
                if bad:
                    raise VerbError(f"--where kind={bad[0]!r}: kinds are {', '.join(pipeline.KINDS)}.")
                tests.append(ops.Term("kind", values))
            else:
                tests.append(ops.Term("updated_before", (now - _duration(value),)))
            shown.append(word)
    if not shown:
        raise VerbError("--where needs at least one KEY=VALUE filter.")
    return Where(ItemFilter(tuple(tests)), "where " + " ".join(shown))


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
        rows: Rows,
        ids: Iterable[str] | Where | None = None,
        *,
        matching: ItemFilter | None = None,
    ) -> list[ItemState]:
        """The items a verb plans from: named (in the order named), or those a filter matches (by
        id; with neither, every item that is not discarded). `rows` is the verb's unit, which locks
        them until it ends, or the unlocked read of a dry run."""
        if isinstance(ids, Where):
            return rows.select_matching(ids.filter)
        if isinstance(ids, _Found) and not ids:
            return []
        if ids is not None:
            ids = list(dict.fromkeys(ids))
            if not ids:
                raise VerbError("No items selected. Name item ids, or use --failed / --all.")
            found = rows.select_items(ids)
            known = {item.id for item in found}
            missing = [i for i in ids if i not in known]
            if missing:
                raise VerbError(
                    f"Unknown item id{'s' if len(missing) > 1 else ''}: {', '.join(missing[:5])}"
                    f"{' ...' if len(missing) > 5 else ''}. `ewg status` lists the ids."
                )
            return found
        return rows.select_matching(matching or ItemFilter())

    def failure_group_ids(self, fingerprint: str) -> list[str]:
        stage, _, rest = fingerprint.partition("|")
        error_class, sep, _message = rest.partition("|")
        stages = {s for k in pipeline.KINDS for s in pipeline.stages_of(k)}
        if not sep or stage not in (*stages, "-") or error_class not in (*errors.ERROR_CLASSES, "-"):
            raise VerbError(
                f"{fingerprint!r} is not a failure group fingerprint (STAGE|CLASS|MESSAGE);"
                " `ewg failures` lists the groups with the command for each."
            )
        ids = [
            item.id
            for item in ops.read_failed(self.store)
            if errors.fingerprint(
                item.next_stage, item.error_class, item.error_message, item_id=item.id, source=item.source
            )
            == fingerprint
        ]
        return ids  # none: a selection that matches nothing, so "nothing to do"

    # -- the engine of every verb ----------------------------------------------------------
    def _run(
        self,
        verb: str,
        selection: str,
        select: Callable[[Rows], list[ItemState]],
        plan: Planner,
        reason: str,
        dry_run: bool,
        *,
        named: bool = False,
        also: Callable[[Unit, float], None] | None = None,
        expand: Callable[[Rows, Preview], None] | None = None,
    ) -> Preview:
        """Plan and (unless dry_run) apply in one transaction, from rows locked for it. `named`: the ids
        were named by a person, so a verb that does not apply to one of them is a mistake in the call
        (VerbError, nothing changed); a selection that matches nothing is "nothing to do" and writes no
        event."""
        reason = check_reason(reason)
        now = self.clock.now()
        if dry_run:
            rows = Unlocked(self.store)
            preview = self._plan(verb, selection, select(rows), plan)
            if expand:
                expand(rows, preview)
            self._check_named(preview, named and self.strict)
            preview.also, preview.replayable = also, True
            return preview
        self._finish_removals()
        with self.store.write() as unit:
            preview = self._plan(verb, selection, select(unit), plan)
            if expand:
                expand(unit, preview)
            self._check_named(preview, named and self.strict)
            preview.reason, preview.also = reason, also
            work = self._commit(unit, preview, now)
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
        with self.store.write() as unit:
            now_held = {item.id: item for item in unit.select_items(preview.item_ids)}
            for change in preview.changes:
                item = now_held.get(change.item_id)
                if (
                    item is None
                    or item.lease_token != change.lease_token
                    or item.status != change.before.get("status")
                ):
                    done.skipped.append((change.item_id, CHANGED))
                else:
                    done.changes.append(change)
            work = self._commit(unit, done, now)
        _remove_files(self.ws, work)
        return done

    def _commit(self, unit: Unit, preview: Preview, now: float) -> FileWork:
        """Write the planned changes and their audit event; return the file work for after the commit.
        Each change is a compare-and-swap on the status and lease it was planned from: one that no
        longer holds moves from the changes to the skipped, untouched."""
        work: FileWork = {}
        if preview.nothing_to_do and preview.also is None:
            preview.notes.insert(0, "nothing to do")
            return work  # no change, no audit event
        applied: list[Change] = []
        for change in preview.changes:
            names = self._apply(unit, change, preview.verb, now)
            if names is None:
                preview.skipped.append((change.item_id, CHANGED))
                continue
            applied.append(change)
            if names:
                work[change.item_id] = names
        preview.changes = applied
        if preview.nothing_to_do and preview.also is None:
            preview.notes.insert(0, "nothing to do")
            return work  # every item moved under the verb: no change, no audit event
        if work:
            self._confirm_owned()
            _hold_files(unit, work, self.actor, now)
        if preview.also is not None:
            preview.also(unit, now)
        preview.applied = True
        unit.notify("verb")  # other hosts: look for the work it queued, or the cancel it asked for
        preview.event_id = unit.record_event(
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

    def _plan(self, verb: str, selection: str, items: list[ItemState], plan: Planner) -> Preview:
        preview = Preview(verb, selection)
        for item in items:
            outcome = plan(item)
            if isinstance(outcome, str):
                preview.skipped.append((item.id, outcome))
                continue
            values = outcome.values
            after = outcome.shown_after or {
                "stage": values.get("stage", item.stage),
                "status": values.get("status", item.status),
            }
            preview.changes.append(
                Change(
                    item.id,
                    item.kind,
                    {"stage": item.stage, "status": item.status},
                    after,
                    outcome.stages_rerun,
                    outcome.drop_cache,
                    outcome.delete_files,
                    interrupts_run=item.status == "running" and "status" in values,
                    plan=outcome,
                    note=outcome.note,
                    lease_token=item.lease_token,
                )
            )
        return preview

    def _apply(self, unit: Unit, change: Change, verb: str, now: float) -> list[str] | None:
        """Write one change, fenced by the status and lease it was planned from; return the entries of
        the item's folder to remove once it has committed, or None when the item moved under the verb
        (nothing written)."""
        plan = change.plan
        assert plan is not None
        item_id, status, token = change.item_id, str(change.before.get("status")), change.lease_token
        values = {**plan.values, "updated_at": now}
        if change.interrupts_run:
            values.update(
                lease_owner=None, lease_expires_at=None, cancel_requested=None, cancel_requested_at=None
            )
            unit.close_attempt(  # fenced by the token too: it writes nothing if the lease moved
                item_id,
                token,
                now,
                "cancelled",
                decision=f"taken over by operator verb {verb}",
                spent=False,
            )
        if not unit.change_item(item_id, status, token, values, fence_out=change.interrupts_run):
            return None
        if change.stages_rerun:
            unit.mark_stale(item_id, change.stages_rerun)
        # Only what is there: an item with nothing to lose is neither held from claims nor refused.
        item_dir = self.ws.item_dir(item_id)
        names: list[str] = []
        if change.files_deleted:
            unit.mark_stale(item_id)
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
            unit.record_skipped_stage(item_id, plan.skipped_stage, now)
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
        ids, selection, matching = self._selection(ids, failed=failed, group=group, kind=kind)
        recovery = self.ws.config.recovery
        drop = recovery.auto_clear_cache_on_retry

        def plan(row):
            if row.status not in (*RETRYABLE, DISCARDED):
                return (
                    f"is {row.status}; retry applies to failed, waiting, blocked, stopped or discarded items"
                )
            note = ""
            if not recovery.auto_cleanup_failed_files:
                kept = len(checkpoints.failed_outputs(self.ws.item_dir(row.id)))
                if kept:
                    note = (
                        f"keeps {kept} failed output(s) .failed-* (auto_cleanup_failed_files = false;"
                        f" the newest {recovery.keep_failed_outputs} are kept)"
                    )
            return Plan(
                _requeue(self.clock.now()),
                [row.next_stage] if row.next_stage else [],
                drop_cache=drop,
                note=note,
            )

        return self._run(
            "retry",
            selection,
            lambda rows: self._select(rows, ids, matching=matching),
            plan,
            reason,
            dry_run,
            named=_named(ids),
        )

    def resume(
        self, ids: Iterable[str] | Where | None = None, *, reason: str = "", dry_run: bool = False
    ) -> Preview:
        """Continue from the last complete checkpoint, keeping the cache."""
        matching = (
            None if ids is not None else ItemFilter.of(status=("stopped", "failed", "blocked", "retrying"))
        )

        def plan(row):
            if row.status not in RETRYABLE:
                return f"is {row.status}; resume applies to stopped, failed, waiting or blocked items"
            return Plan(_requeue(self.clock.now()), [row.next_stage] if row.next_stage else [])

        return self._run(
            "resume",
            _describe(ids, "all stopped and failed"),
            lambda rows: self._select(rows, ids, matching=matching),
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
        ids, selection, matching = self._selection(ids, failed=failed, group=group, kind=None)

        def plan(row):
            order = pipeline.stages_of(row.kind)
            first = pipeline.first_stage(row.kind)
            start = from_stage or first
            if start not in order or order.index(start) < order.index(first):
                return (
                    f"has no stage {start!r} to run ({row.kind} stages: "
                    f"{', '.join(order[order.index(first) :])})"
                )
            if start != first and pipeline.stage_index(row.kind, row.stage) < order.index(start) - 1:
                return (
                    f"has not completed {order[order.index(start) - 1]!r} yet, so it cannot rerun from "
                    f"{start!r}; use reprocess without --from"
                )
            completed = pipeline.previous_stage(row.kind, start)
            values = {**_requeue(self.clock.now()), **_at_stage(row.kind, completed)}
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
            lambda rows: self._select(rows, ids, matching=matching),
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
            if row.stage is None and row.status == "queued":
                return "has not completed discovered yet; nothing to reset"
            order = pipeline.stages_of(row.kind)
            values = {**_requeue(self.clock.now()), **_at_stage(row.kind, "discovered")}
            if row.stage is None:  # never discovered: start from the start
                values.update(_at_stage(row.kind, None))
            return Plan(values, list(order[1:]), drop_cache=True)

        if all_items:
            chosen, matching, selection = None, None, "all items"
        elif failed:
            chosen, matching, selection = None, ItemFilter.of(status=("failed",)), "all failed"
        else:
            chosen, matching, selection = ids, None, _describe(ids, "")
        return self._run(
            "reset",
            selection,
            lambda rows: self._select(rows, chosen, matching=matching),
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
            if row.next_stage is None:
                return "is done; there is no stage to skip"
            needs = _needed_by(row.kind, row.next_stage, config)
            if needs:
                return (
                    f"cannot skip {row.next_stage}: {needs} reads its output and would fail without it."
                    f" Retry or fix {row.next_stage} instead, or declare skip_fallback = true under"
                    f" [stages.{row.kind}.{row.next_stage}] if later stages cope without it"
                )
            values = {**_requeue(self.clock.now()), **_at_stage(row.kind, row.next_stage)}
            return Plan(values, skipped_stage=row.next_stage)

        return self._run(
            "skip",
            _describe(ids, ""),
            lambda rows: self._select(rows, ids),
            plan,
            reason,
            dry_run,
            named=_named(ids),
        )

    def rollback(self, item_id: str, to_stage: str, *, reason: str = "", dry_run: bool = False) -> Preview:
        """Move `stage` back to an earlier checkpoint; later checkpoints become stale and rerun."""

        def plan(row):
            order = pipeline.stages_of(row.kind)
            if to_stage not in order:
                raise VerbError(
                    f"{row.id} has no stage {to_stage!r} ({row.kind} stages: {', '.join(order)})."
                )
            if row.stage == to_stage:
                raise VerbError(f"{row.id} is already at {to_stage!r}; nothing to roll back.")
            if pipeline.stage_index(row.kind, row.stage) < order.index(to_stage):
                raise VerbError(
                    f"Cannot roll {row.id} back to {to_stage!r}: its last completed stage is "
                    f"{row.stage or 'none'}, so that would be a move forward. Pick an earlier stage, "
                    "or use skip to move forward."
                )
            values = {**_requeue(self.clock.now()), **_at_stage(row.kind, to_stage)}
            return Plan(values, list(order[order.index(to_stage) + 1 :]))

        return self._run(
            "rollback",
            f"{item_id} to {to_stage}",
            lambda rows: self._select(rows, [item_id]),
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
            if row.status == "running":
                return "is running; stop it first so its stage does not lose files under it"
            return Plan({}, drop_cache=True)

        return self._run(
            "clear_cache",
            _describe(ids, ""),
            lambda rows: self._select(rows, ids),
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
            if row.status != "failed":
                return f"is {row.status}; only failed items can be discarded"
            return Plan({"status": DISCARDED, "next_attempt_at": 0.0})

        return self._run(
            "discard",
            _describe(ids, ""),
            lambda rows: self._select(rows, ids),
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
            if row.status == "running":
                return Plan(
                    {"cancel_requested": request, "cancel_requested_at": now},
                    shown_after={"stage": row.stage, "status": shown},
                )
            if every:
                return "is not running"
            if row.status in ("queued", "retrying", "blocked"):
                return Plan({"status": "stopped", "next_attempt_at": now})
            return f"is {row.status}; only running or waiting items can be stopped"

        matching = ItemFilter.of(status=("running",)) if every else None
        verb = "force_stop" if force else "stop"
        preview = self._run(
            verb,
            _describe(ids_list, "all running work"),
            lambda rows: self._select(rows, ids_list, matching=matching),
            plan,
            reason,
            dry_run,
            named=_named(ids_list),
            also=(lambda unit, at: self._set_paused(unit, "1", reason or "stop processing", at))
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
            if row.status != "running":
                return f"is {row.status}; only running items have a timeout to extend"
            values = {"deadline_extension": (row.deadline_extension or 0) + seconds, "verdict": None}
            if row.cancel_requested in ("timeout", "stall"):
                values.update(cancel_requested=None, cancel_requested_at=None)
            return Plan(values)

        return self._run(
            "extend",
            f"{item_id} by {seconds:.0f} s",
            lambda rows: self._select(rows, [item_id]),
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
        current = ops.read_paused(self.store)
        preview.notes.append(
            f"engine {'paused' if current else 'running'} -> {'paused' if value else 'running'}"
        )
        if dry_run:
            return preview
        with self.store.write() as unit:
            self._set_paused(unit, value, reason, now)
            unit.notify("verb")
            preview.event_id = unit.record_event(
                now, self.actor, verb, selection="engine", reason=reason, result=preview.notes[0]
            )
        preview.applied = True
        return preview

    def _set_paused(self, unit: Unit, value: str, reason: str, now: float) -> None:
        unit.set_switch("paused", value, reason=reason, actor=self.actor, now=now)

    def _redo_clips(self, rows: Rows, preview: Preview) -> None:
        """An episode that reruns editorial has clips born of the old run: they wait (stopped) for the
        new editorial, which redoes those it picks again and discards those it no longer picks."""
        parents = [
            c.item_id for c in preview.changes if c.kind == pipeline.EPISODE and "editorial" in c.stages_rerun
        ]
        if not parents:
            return
        taken = set(preview.item_ids)
        now = self.clock.now()
        for clip in rows.select_clips_of(parents):
            if clip.id in taken:
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
                    clip.id,
                    clip.kind,
                    {"stage": clip.stage, "status": clip.status},
                    {"stage": "discovered", "status": "stopped"},
                    plan.stages_rerun,
                    interrupts_run=clip.status == "running",
                    plan=plan,
                    note=f"{AWAITS_EDITORIAL} ({clip.parent_id}): redone if picked again, else discarded",
                    lease_token=clip.lease_token,
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
        running = ops.read_running_leases(self.store)
        live = {(lease.id, lease.lease_token) for lease in running}
        work: FileWork = {}
        foreign: list[str] = []
        orphans: list[str] = []  # folders no item names
        temps: list[tuple[str, str, int]] = []  # (item, entry, token) of attempts' temporary folders
        if root.exists():
            for entry in sorted(root.iterdir()):
                if entry.name in known or entry.name == ownership.ITEMS_MARKER:
                    continue
                if ownership.looks_like_item_dir(entry):
                    work[entry.name] = [""]
                    orphans.append(entry.name)
                else:
                    foreign.append(entry.name)
        for path, item_id, _stage, token in checkpoints.leftovers(root):
            if item_id not in known or path.parent.is_symlink():
                continue
            if not (path.name.startswith(checkpoints.TMP_PREFIX) and (item_id, token) in live):
                work.setdefault(item_id, []).append(path.name)
                if path.name.startswith(checkpoints.TMP_PREFIX):
                    temps.append((item_id, path.name, token))
        kept_failed = {p.parent.name for p in root.glob(f"*/{FAILED_OUTPUTS}")} if root.exists() else set()
        for item_id in sorted(kept_failed & known):
            work.setdefault(item_id, []).append(FAILED_OUTPUTS)
        stale = ops.read_stale_checkpoints(self.store)
        stale_folders = [
            (item_id, stage)
            for item_id, stage in stale
            if item_id in known and (self.ws.item_dir(item_id) / stage).exists()
        ]
        for item_id, stage in stale_folders:
            work.setdefault(item_id, []).append(stage)
        failed_caches = [  # Deep Clean also clears the caches of failed (and discarded) items
            item_id
            for item_id in ops.read_item_ids(self.store, statuses=("failed", DISCARDED))
            if item_id in known and (self.ws.item_dir(item_id) / "cache").is_dir()
        ]
        for item_id in failed_caches:
            work.setdefault(item_id, []).append("cache")
        doomed = [
            self.ws.item_dir(item_id) / name if name else self.ws.item_dir(item_id)
            for item_id, names in work.items()
            for name in names
        ]
        # Stale state: what only a running attempt may hold, left on rows that are not running.
        leftover = ops.read_stale_run_state(self.store)
        dead = [lease for lease in running if owner_alive(lease.lease_owner or "") is False]
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
        preview.changes = [
            Change(lease.id, "", {"status": "running"}, {"status": "queued"}, lease_token=lease.lease_token)
            for lease in dead
        ]
        if dry_run:
            return preview
        now = self.clock.now()
        for lease in dead:  # a dead owner's stage processes end before its item can run again
            groups.kill_recorded(
                lease.stage_pid,
                lease.stage_pgid,
                groups.lease_marker(lease.lease_owner, lease.id, lease.lease_token),
                self.ws.config.engine.force_grace,
            )
        with self.store.write() as unit:
            rescued = []
            for change in preview.changes:  # fenced by the lease read: another host may have rescued it
                if unit.release(
                    change.item_id,
                    change.lease_token,
                    now,
                    "dead",
                    "queued",
                    "rescued by deep clean: owner process is gone",
                    bump=True,
                    verdict="DEAD",
                ):
                    rescued.append(change)
                else:
                    preview.skipped.append((change.item_id, CHANGED))
            preview.changes = rescued
            # What changed since the listing keeps its files: a stale checkpoint republished, an
            # attempt started (its temporary folder), a folder whose item was added (another host).
            dropped = set(unit.drop_stale_checkpoints(stale))
            kept = [(item_id, stage) for item_id, stage in stale_folders if (item_id, stage) not in dropped]
            now_live = {(lease.id, lease.lease_token) for lease in unit.running_leases()}
            kept += [(item_id, name) for item_id, name, token in temps if (item_id, token) in now_live]
            kept += [(item_id, "") for item_id in unit.existing_ids(orphans)]
            for item_id, name in kept:
                work[item_id].remove(name)
                if not work[item_id]:
                    del work[item_id]
            unit.clear_run_state(leftover)
            _hold_files(unit, work, self.actor, now)
            preview.event_id = unit.record_event(
                now,
                self.actor,
                "deep_clean",
                selection="workspace",
                reason=reason,
                affected=preview.item_ids,
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
            ids = _Found(
                ops.read_item_ids(self.store, statuses=("failed",), kind=pipeline.CLIP)
            )  # none: nothing to do
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
        kinds = ops.read_kinds(self.store, ids)
        not_clips = [i for i in dict.fromkeys(ids) if i in kinds and kinds[i] != pipeline.CLIP]
        if not_clips:
            raise VerbError(
                f"{', '.join(not_clips[:5])} {'is' if len(not_clips) == 1 else 'are'} not a clip; "
                "clip verbs take clip ids (EPISODE__cNN)."
            )
        return ids

    def _clips_of(self, episode_ids: Iterable[str] | None) -> list[str]:
        parents = None if episode_ids is None else list(episode_ids)
        return ops.read_item_ids(self.store, kind=pipeline.CLIP, parents=parents)

    def _selection(
        self, ids, *, failed: bool, group: str | None, kind: str | None
    ) -> tuple[Iterable[str] | Where | None, str, ItemFilter | None]:
        """(the ids or filter to select, how the audit log names the selection, the filter when no ids)."""
        if isinstance(ids, Where):
            return ids, ids.text, None
        if group is not None:
            return _Found(self.failure_group_ids(group)), f"failure group {group}", None
        if failed:
            kinds = (kind,) if kind in pipeline.KINDS else ()
            return (
                None,
                f"all failed{' ' + kind + 's' if kind else ''}",
                ItemFilter.of(status=("failed",), kind=kinds),
            )
        if ids is None:
            raise VerbError(
                "Name the items, or use --failed for all failed items, --group FINGERPRINT or --where."
            )
        ids = list(ids)
        return ids, _describe(ids, ""), None


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


def _hold_files(unit: Unit, work: FileWork, actor: str, now: float) -> None:
    """Inside the verb's transaction: mark each item's files pending removal, so no claim starts the
    item before `_remove_files` has run (a crash in between is finished by `finish_pending_removals`).
    An earlier removal of the item that has not run yet is done with this one."""
    owner = owner_id()
    for item_id, names in work.items():
        work[item_id] = unit.hold_files(item_id, names, owner, actor, now)


def _remove_files(ws: Workspace, work: FileWork) -> None:
    """After the commit: remove what the verb planned, then let the items be claimed again."""
    if not work:
        return
    for item_id, names in work.items():
        ownership.remove_in_item(ws.item_dir(item_id), names)
    owner = owner_id()
    with ws.store.write() as unit:
        for item_id in work:
            unit.release_files(item_id, owner)


def _orphaned(ws: Workspace, removal: PendingRemoval, now: float) -> bool:
    """The verb process that holds this removal is gone (or, on another host, silent for a lease)."""
    alive = owner_alive(removal.owner)
    return not alive and (alive is False or now - removal.at >= ws.config.engine.lease_duration)


def orphaned_removals(ws: Workspace) -> list[str]:
    """Items held from claims by the file removal of a verb process that died after its commit."""
    now = ws.clock.now()
    return [r.item_id for r in ops.read_pending_removals(ws.store) if _orphaned(ws, r, now)]


def finish_pending_removals(ws: Workspace) -> int:
    """Finish the file removals of verbs whose process died after their commit (or, on another host,
    stopped for longer than a lease); the items they hold become claimable again."""
    now = ws.clock.now()
    done = 0
    for removal in ops.read_pending_removals(ws.store):
        if not _orphaned(ws, removal, now):
            continue  # its own process is still at it
        ws.confirm_owned()
        ownership.remove_in_item(ws.item_dir(removal.item_id), list(removal.names))
        with ws.store.write() as unit:
            unit.finish_removal(removal)
        done += 1
    return done


def _describe(ids, default: str) -> str:
    if ids is None:
        return default
    if isinstance(ids, Where):
        return ids.text
    ids = list(ids)
    return ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"
