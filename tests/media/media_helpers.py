"""Build StageContexts by hand and run the media stages the way the engine does."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import engine.media  # noqa: F401 - registers the built-in stages
from engine import stages
from engine.config import Config, StageConfig
from engine.stages import CancelToken, Earlier, ItemInfo, LogTail, StageContext

EDITORIAL = {"min_clip_seconds": 1.0, "max_clip_seconds": 2.5, "max_clips": 2}


def by_expectation(demo_media: dict, expectation: str) -> dict:
    return next(d for d in demo_media["items"] if d["expectation"] == expectation)


def episode_item(entry: dict) -> ItemInfo:
    return ItemInfo(entry["id"], "episode", entry["source"], entry["show"], entry["title"])


def make_ctx(
    item: ItemInfo,
    stage: str,
    out_root: Path,
    inputs: dict[str, Path] | None = None,
    parent_inputs: dict[str, Path] | None = None,
    options: dict[str, Any] | None = None,
    config: Config | None = None,
    services: list[str] | None = None,
    progress: list | None = None,
) -> StageContext:
    out = out_root / f"{item.id}.{stage}.tmp"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tail = LogTail()
    logger = logging.Logger(f"test.{item.id}.{stage}")
    logger.addHandler(tail)
    ctx = StageContext(
        item=item,
        stage=stage,
        attempt=1,
        earlier=Earlier(inputs=inputs, parent_inputs=parent_inputs),
        output_path=out,
        cache_dir=out_root / "cache",
        item_dir=out_root,
        workspace=out_root,
        stage_config=StageConfig(kind="builtin", options=options or {}, services=services or []),
        config=config or Config(),
        cancel=CancelToken(),
        logger=logger,
        log_tail=tail,
    )
    if progress is not None:
        ctx._progress = lambda f, m: progress.append((f, m))
    return ctx


def run_stage(
    item: ItemInfo, stage: str, out_root: Path, checkpoints: dict[str, Path], **kw: Any
) -> StageContext:
    """Resolve like the engine, run, and publish the output as `<out_root>/<item>/<stage>` (a checkpoint)."""
    ctx = make_ctx(item, stage, out_root, inputs=checkpoints, **kw)
    impl = stages.resolve(item.kind, stage, ctx.stage_config)
    impl(ctx)
    final = out_root / item.id / stage
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    ctx.output_dir.rename(final)
    checkpoints[stage] = final
    return ctx
