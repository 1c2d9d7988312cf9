"""Every operator verb the console offers: its key, whether it asks first, what it applies to, and
how it calls the engine. The main screen's BINDINGS, the help screen and the command palette all
come from this one list, so they cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine import pipeline
from engine.verbs import DISCARDED, RETRYABLE, Operator, Preview

# What a verb acts on: the selected items (either kind), selected clips, the selected episodes'
# clips, or the whole workspace / engine.
ITEMS, CLIPS, EPISODES, GLOBAL = "items", "clips", "episodes", "global"

Runner = Callable[[Operator, list[str], object, str, bool], Preview]


@dataclass(frozen=True)
class VerbSpec:
    action: str  # action name on the main screen (action_<name>)
    key: str
    title: str
    help: str
    runner: Runner
    scope: str = ITEMS
    confirm: bool = False  # destructive: preview + confirmation with No focused
    applies: Callable[[dict], bool] | None = None
    choose: str | None = None  # reprocess_stage | rollback_stage | extend_seconds | failure_group
    single: bool = False  # acts on one item (the cursor row)
    group: str = "Recovery"

    @property
    def binding_id(self) -> str:
        return f"verb.{self.action}"


def _index(row: dict) -> int:
    return pipeline.stage_index(row["kind"], row.get("stage"))


STOPPABLE = ("queued", "retrying", "blocked", "running")

VERBS: tuple[VerbSpec, ...] = (
    VerbSpec(
        "retry",
        "r",
        "Retry",
        "Retry the selected items' current stage now, with a fresh attempt budget.",
        lambda op, ids, _c, reason, dry: op.retry(ids, reason=reason, dry_run=dry),
        applies=lambda r: r["status"] in (*RETRYABLE, DISCARDED),
    ),
    VerbSpec(
        "resume",
        "u",
        "Resume",
        "Continue the selected items from their last complete checkpoint, keeping the cache.",
        lambda op, ids, _c, reason, dry: op.resume(ids, reason=reason, dry_run=dry),
        applies=lambda r: r["status"] in RETRYABLE,
    ),
    VerbSpec(
        "retry_failed",
        "A",
        "Retry all failed",
        "Retry every failed episode and clip in the workspace.",
        lambda op, _ids, _c, reason, dry: op.retry(failed=True, reason=reason, dry_run=dry),
        scope=GLOBAL,
        confirm=True,
    ),
    VerbSpec(
        "retry_failed_episodes",
        "F",
        "Retry failed episodes",
        "Every failed item: caches cleared, reset to discovered, errors cleared, processed again.",
        lambda op, _ids, _c, reason, dry: op.reset(failed=True, reason=reason, dry_run=dry),
        scope=GLOBAL,
        confirm=True,
    ),
    VerbSpec(
        "discard",
        "H",
        "Discard (dead letter)",
        "Archive the selected failed items: kept, hidden from lists (Dead letters shows them); Retry brings them back.",
        lambda op, ids, _c, reason, dry: op.discard(ids, reason=reason, dry_run=dry),
        confirm=True,
        applies=lambda r: r["status"] == "failed",
    ),
    VerbSpec(
        "retry_group",
        "f",
        "Retry a failure group",
        "Pick a failure group (same stage, class and message) and retry all its items.",
        lambda op, _ids, fingerprint, reason, dry: op.retry(
            group=str(fingerprint), reason=reason, dry_run=dry
        ),
        scope=GLOBAL,
        confirm=True,
        choose="failure_group",
    ),
    VerbSpec(
        "reprocess",
        "R",
        "Force reprocess",
        "Rerun the selected items from the start or from a chosen stage; their cache is dropped.",
        lambda op, ids, stage, reason, dry: op.reprocess(
            ids, from_stage=stage or None, reason=reason, dry_run=dry
        ),
        confirm=True,
        choose="reprocess_stage",
    ),
    VerbSpec(
        "reset",
        "Z",
        "Reset to discovered",
        "Clear results and errors; everything after discovered reruns.",
        lambda op, ids, _c, reason, dry: op.reset(ids, reason=reason, dry_run=dry),
        confirm=True,
        applies=lambda r: not (r.get("stage") is None and r["status"] == "queued"),
    ),
    VerbSpec(
        "skip",
        "s",
        "Skip stage",
        "Mark the current stage done without running it (recorded as skipped).",
        lambda op, ids, _c, reason, dry: op.skip(ids, reason=reason, dry_run=dry),
        confirm=True,
        applies=lambda r: bool(r.get("next_stage")),
    ),
    VerbSpec(
        "rollback",
        "B",
        "Roll back",
        "Move the item back to an earlier checkpoint; later stages rerun.",
        lambda op, ids, stage, reason, dry: op.rollback(ids[0], str(stage), reason=reason, dry_run=dry),
        confirm=True,
        choose="rollback_stage",
        single=True,
        applies=lambda r: _index(r) >= 1,
    ),
    VerbSpec(
        "clear_cache",
        "c",
        "Clear cache",
        "Delete the selected items' cache and kept partial outputs.",
        lambda op, ids, _c, reason, dry: op.clear_cache(ids, reason=reason, dry_run=dry),
        confirm=True,
        applies=lambda r: r["status"] != "running",
    ),
    VerbSpec(
        "stop",
        "x",
        "Stop",
        "Stop the selected items at a safe point; they wait for Resume.",
        lambda op, ids, _c, reason, dry: op.stop(ids, reason=reason, dry_run=dry),
        applies=lambda r: r["status"] in STOPPABLE,
    ),
    VerbSpec(
        "force_stop",
        "X",
        "Force stop",
        "Stop now: subprocesses are killed, a stuck stage is abandoned.",
        lambda op, ids, _c, reason, dry: op.stop(ids, force=True, reason=reason, dry_run=dry),
        confirm=True,
        applies=lambda r: r["status"] in STOPPABLE,
    ),
    VerbSpec(
        "extend",
        "e",
        "Extend timeout",
        "Wait longer: push a running item's timeout and stall threshold out.",
        lambda op, ids, seconds, reason, dry: op.extend(ids[0], float(seconds), reason=reason, dry_run=dry),
        choose="extend_seconds",
        single=True,
        applies=lambda r: r["status"] == "running",
    ),
    VerbSpec(
        "stop_processing",
        "S",
        "Stop processing",
        "Pause the engine and release all running work at a safe point; Pause / resume engine continues.",
        lambda op, _ids, _c, reason, dry: op.stop(None, reason=reason, dry_run=dry),
        scope=GLOBAL,
        confirm=True,
        group="Engine",
    ),
    VerbSpec(
        "toggle_engine",
        "P",
        "Pause / resume engine",
        "Stop or restart claiming new work (running work finishes).",
        lambda op, _ids, paused, reason, dry: (op.unpause if paused else op.pause)(
            reason=reason, dry_run=dry
        ),
        scope=GLOBAL,
        group="Engine",
    ),
    VerbSpec(
        "deep_clean",
        "D",
        "Deep clean",
        "Sweep orphan folders, temporary files, stale checkpoints and dead leases; vacuum the database.",
        lambda op, _ids, _c, reason, dry: op.deep_clean(reason=reason, dry_run=dry),
        scope=GLOBAL,
        confirm=True,
        group="Engine",
    ),
    VerbSpec(
        "rerender_clips",
        "E",
        "Re-render clips",
        "Render the selected clips again from their generated cut.",
        lambda op, ids, _c, reason, dry: op.rerender_clips(ids, reason=reason, dry_run=dry),
        scope=CLIPS,
        confirm=True,
        applies=lambda r: _index(r) >= 1,
        group="Clips",
    ),
    VerbSpec(
        "delete_and_retry_clips",
        "ctrl+d",
        "Delete & retry clips",
        "Delete the selected clips' files and generate them again.",
        lambda op, ids, _c, reason, dry: op.delete_and_retry_clips(ids, reason=reason, dry_run=dry),
        scope=CLIPS,
        confirm=True,
        applies=lambda r: _index(r) >= 0,
        group="Clips",
    ),
    VerbSpec(
        "clean_and_retry_clips",
        "ctrl+k",
        "Clean & retry clips",
        "Delete the selected clips' files and outputs, then retry them from generation.",
        lambda op, ids, _c, reason, dry: op.clean_and_retry_clips(ids, reason=reason, dry_run=dry),
        scope=CLIPS,
        confirm=True,
        applies=lambda r: _index(r) >= 0,
        group="Clips",
    ),
    VerbSpec(
        "retry_failed_clips",
        "ctrl+a",
        "Retry all failed clips",
        "Retry every failed clip in the workspace.",
        lambda op, _ids, _c, reason, dry: op.retry_all_failed_clips(reason=reason, dry_run=dry),
        scope=GLOBAL,
        confirm=True,
        group="Clips",
    ),
    VerbSpec(
        "regenerate_clips",
        "ctrl+g",
        "Regenerate all clips",
        "Generate every clip of the selected episodes again.",
        lambda op, ids, _c, reason, dry: op.regenerate_all_clips(ids, reason=reason, dry_run=dry),
        scope=EPISODES,
        confirm=True,
        applies=lambda r: _index(r) >= pipeline.EPISODE_STAGES.index("editorial"),
        group="Clips",
    ),
)

VERBS_BY_ACTION = {v.action: v for v in VERBS}

EXTEND_CHOICES = ((300, "5 minutes"), (900, "15 minutes"), (3600, "1 hour"), (4 * 3600, "4 hours"))


def stage_choices(spec: VerbSpec, row: dict) -> list[tuple[str, str]]:
    """(value, label) pairs for the stage a reprocess or rollback goes to."""
    order = pipeline.stages_of(row["kind"])
    done = _index(row)
    if spec.choose == "reprocess_stage":
        choices = [("", "from the start (all stages rerun)")]
        for n, stage in enumerate(order[1:], start=1):
            if done >= n - 1:
                choices.append((stage, f"from {stage} ({', '.join(order[n:])} rerun)"))
        return choices
    return [
        (stage, f"back to {stage} ({', '.join(order[n + 1 :])} rerun)")
        for n, stage in enumerate(order[:done])
    ]
