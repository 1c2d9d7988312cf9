"""One set of tiny generated media for the whole media suite (generated once: seconds)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from media_helpers import EDITORIAL, by_expectation, episode_item, run_stage  # noqa: E402

from engine.media.demo_media import generate_demo_media  # noqa: E402
from engine.stages import ItemInfo  # noqa: E402


@pytest.fixture(scope="session")
def demo_media(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("sources")
    made = generate_demo_media(folder, count=2, seed=11, seconds=4.0)
    return {"folder": folder, "items": made}


@pytest.fixture(scope="session")
def processed(demo_media, tmp_path_factory) -> dict:
    """The first good episode through all five episode stages, and its clips through both clip stages."""
    root = tmp_path_factory.mktemp("items")
    entry = by_expectation(demo_media, "ok")
    item = episode_item(entry)
    checkpoints: dict[str, Path] = {}
    contexts = {}
    for stage in ("discovered", "transcribed", "enriched", "editorial", "rendered"):
        contexts[stage] = run_stage(
            item, stage, root, checkpoints, options=EDITORIAL if stage == "editorial" else None
        )
    clips = {}
    for spec in contexts["editorial"].clips:
        clip = ItemInfo(
            f"{item.id}__{spec.key}",
            "clip",
            item.source,
            item.show,
            spec.title,
            item.id,
            spec.start,
            spec.end,
        )
        clip_checkpoints: dict[str, Path] = {}
        run_stage(clip, "generated", root, clip_checkpoints)
        run_stage(clip, "rendered", root, clip_checkpoints, parent_inputs=checkpoints)
        clips[spec.key] = (clip, clip_checkpoints)
    return {"root": root, "item": item, "checkpoints": checkpoints, "contexts": contexts, "clips": clips}
