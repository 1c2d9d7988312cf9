"""The demo pipeline: configurable durations and injected faults.

Faults come from `[demo]` in ewg.toml, by script ("episode 3 fails transient
twice at transcribed") and by probability. A scripted fault fires while the
number of earlier attempts of that stage is below `times`, so it is
deterministic and survives restarts. Each stage writes a small JSON output so
checkpoints, manifests and the crash tests have real files to check.
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
_CLIP = re.compile(r"__c(\d+)$")


def item_number(item_id: str) -> int | None:
    m = _NUMBER.search(item_id)
    return int(m.group(1)) if m else None


def active_fault(ctx: StageContext) -> DemoFault | None:
    number = item_number(ctx.item.id if ctx.item.kind == "episode" else (ctx.item.parent_id or ""))
    for fault in ctx.config.demo.faults:
        if fault.kind != ctx.item.kind or fault.item != number or fault.stage != ctx.stage:
            continue
        if ctx.item.kind == "clip" and not ctx.item.id.endswith("__c01"):
            continue   # clip faults hit the episode's first clip
        if ctx.previous_attempts < fault.times:
            return fault
    return None


def run(ctx: StageContext) -> None:
    fault = active_fault(ctx)
    duration = ctx.stage_config.duration
    rng = random.Random(f"{ctx.config.demo.seed}:{ctx.item.id}:{ctx.stage}:{ctx.previous_attempts}")
    duration *= 0.75 + rng.random() * 0.5
    if fault and fault.fault == "slow":
        duration *= 5
    if fault:
        ctx.logger.warning("demo fault %s injected", fault.fault)
    if fault and fault.fault in ("missing_dependency", "config_error", "persistent", "cache"):
        _raise(fault.fault, ctx)
    steps = max(1, int(duration / 0.1))
    for i in range(steps):
        ctx.cancel.wait(duration / steps)
        ctx.progress((i + 1) / steps, f"{ctx.stage} {int(100 * (i + 1) / steps)}%")
        if fault and i == steps // 2:
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
        if (ctx.config.demo.transient_probability and i == steps // 2
                and rng.random() < ctx.config.demo.transient_probability):
            raise StageError(errors.TRANSIENT, "HTTP 503 from enrichment API (demo chaos)")
    out = {"item": ctx.item.id, "stage": ctx.stage, "attempt": ctx.attempt, "inputs": sorted(ctx.inputs)}
    (ctx.output_dir / f"{ctx.stage}.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    if ctx.item.kind == "episode" and ctx.stage == "editorial":
        for n in (1, 2):
            ctx.create_clip(f"c{n:02d}", 10.0 * n, 10.0 * n + 8.0, f"{ctx.item.title} — highlight {n}")


def _raise(kind: str, ctx: StageContext) -> None:
    if kind == "persistent":
        raise StageError(errors.PERSISTENT, f"corrupt source: {ctx.item.source} has no readable video stream (demo)",
                         detail="moov atom not found")
    if kind == "cache":
        raise StageError(errors.CACHE_RELATED, "cached transcript checksum mismatch (demo)")
    if kind == "missing_dependency":
        raise StageError(errors.MISSING_DEPENDENCY, "whisper is not installed (demo)",
                         suggestion="Install faster-whisper or configure a transcription command, then retry.")
    raise StageError(errors.CONFIG_ERROR, f"[stages.episode.{ctx.stage}] options.model is not set (demo)")


_release_hangs = False


def _ignore_cancel_forever(limit: float = 3600.0) -> None:
    """Sleep without looking at the cancel token, as a badly written stage would."""
    end = time.monotonic() + limit
    while time.monotonic() < end and not _release_hangs:
        time.sleep(0.05)
