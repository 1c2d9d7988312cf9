"""The demo pipeline and the fault script ("chaos") that any stage can run under.

Faults come from `[demo]` in ewg.toml, by script ("episode 3 fails transient
twice at transcribed") and by probability. A scripted fault fires while the
number of earlier attempts of that stage is below `times`, so it is
deterministic and survives restarts. The simulated stages (`kind = "demo"`)
take `duration` seconds and write a small JSON output, so checkpoints,
manifests and the crash tests have real files to check; real stages run the
same script first (`inject`), paced by `[demo] pace` so a demo can be watched.
"""

from __future__ import annotations

import errno
import json
import random
import re
import time

from .. import errors
from ..config import DemoFault
from ..errors import StageError
from . import StageContext

_NUMBER = re.compile(r"ep(\d+)")


def item_number(item_id: str) -> int | None:
    m = _NUMBER.search(item_id)
    return int(m.group(1)) if m else None


def _targets(fault: DemoFault, ctx: StageContext) -> bool:
    episode_id = ctx.item.id if ctx.item.kind == "episode" else (ctx.item.parent_id or "")
    if isinstance(fault.item, str):
        hit = (
            fault.item in (ctx.item.id, episode_id) if fault.kind == "episode" else fault.item == ctx.item.id
        )
        if fault.kind == "clip" and fault.item == episode_id:
            hit = ctx.item.id.endswith("__c01")
        return hit
    if item_number(episode_id) != fault.item:
        return False
    return ctx.item.kind == "episode" or ctx.item.id.endswith("__c01")  # clip faults hit the first clip


def active_fault(ctx: StageContext) -> DemoFault | None:
    for fault in ctx.config.demo.faults:
        if fault.kind == ctx.item.kind and fault.stage == ctx.stage and _targets(fault, ctx):
            if ctx.previous_attempts < fault.times:
                return fault
    return None


def _rng(ctx: StageContext) -> random.Random:
    return random.Random(f"{ctx.config.demo.seed}:{ctx.item.id}:{ctx.stage}:{ctx.previous_attempts}")


def simulate(ctx: StageContext, duration: float, fault: DemoFault | None, rng: random.Random) -> None:
    """Tick progress for `duration` seconds, firing `fault` half way."""
    if fault and fault.fault == "slow":
        duration *= 5
    steps = max(1, int(duration / 0.1))
    for i in range(steps):
        ctx.cancel.wait(duration / steps)
        ctx.progress((i + 1) / steps, f"{ctx.stage} {int(100 * (i + 1) / steps)}%")
        if i == steps // 2:
            if fault:
                _fire_midway(fault, ctx)
            if ctx.config.demo.transient_probability and rng.random() < ctx.config.demo.transient_probability:
                raise StageError(errors.TRANSIENT, "HTTP 503 from enrichment API (demo chaos)")


def _fire_midway(fault: DemoFault, ctx: StageContext) -> None:
    if fault.fault == "transient":
        raise StageError(errors.TRANSIENT, "connection to transcription service timed out (demo)")
    if fault.fault == "disk_full":
        raise OSError(errno.ENOSPC, "No space left on device (demo)")
    if fault.fault == "hang":
        ctx.logger.warning("demo hang: progress stops here")
        while True:
            ctx.cancel.wait(0.5)
    if fault.fault == "hang_hard":
        ctx.logger.warning("demo hang that ignores its cancel token")
        _ignore_cancel_forever()


def _fire_at_once(fault: DemoFault, ctx: StageContext) -> None:
    if fault.fault == "persistent":
        raise StageError(
            errors.PERSISTENT,
            f"corrupt source: {ctx.item.source} has no readable video stream (demo)",
            detail="moov atom not found",
        )
    if fault.fault == "cache":
        raise StageError(errors.CACHE_RELATED, "cached transcript checksum mismatch (demo)")
    if fault.fault == "missing_dependency":
        raise StageError(
            errors.MISSING_DEPENDENCY,
            "whisper is not installed (demo)",
            suggestion="Install faster-whisper or configure a transcription command, then retry.",
        )
    if fault.fault == "config_error":
        raise StageError(
            errors.CONFIG_ERROR, f"[stages.{ctx.item.kind}.{ctx.stage}] options.model is not set (demo)"
        )


def inject(ctx: StageContext) -> None:
    """The fault script and pacing, before a real stage does its work."""
    fault = active_fault(ctx)
    if fault:
        ctx.logger.warning("injected fault: %s", fault.fault)
        _fire_at_once(fault, ctx)
    pace = ctx.config.demo.pace
    if fault or pace or ctx.config.demo.transient_probability:
        simulate(ctx, pace, fault, _rng(ctx))


def run(ctx: StageContext) -> None:
    """A simulated stage: `duration` seconds of progress, then a small JSON output."""
    fault = active_fault(ctx)
    rng = _rng(ctx)
    if fault:
        ctx.logger.warning("demo fault %s injected", fault.fault)
        _fire_at_once(fault, ctx)
    simulate(ctx, ctx.stage_config.duration * (0.75 + rng.random() * 0.5), fault, rng)
    out = {"item": ctx.item.id, "stage": ctx.stage, "attempt": ctx.attempt, "inputs": sorted(ctx.inputs)}
    (ctx.output_dir / f"{ctx.stage}.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    if ctx.item.kind == "episode" and ctx.stage == "editorial":
        for n in (1, 2):
            ctx.create_clip(f"c{n:02d}", 10.0 * n, 10.0 * n + 8.0, f"{ctx.item.title} — highlight {n}")


_release_hangs = False


def _ignore_cancel_forever(limit: float = 3600.0) -> None:
    """Sleep without looking at the cancel token, as a badly written stage would."""
    end = time.monotonic() + limit
    while time.monotonic() < end and not _release_hangs:
        time.sleep(0.05)
