"""The stage order of the AI-EWG pipeline.

`stage` on an item is the last stage it completed; the engine runs the stage
after it. `None` means nothing is complete yet, so the next stage is the first.
"""

from __future__ import annotations

EPISODE = "episode"
CLIP = "clip"
KINDS = (EPISODE, CLIP)

EPISODE_STAGES = ("discovered", "transcribed", "enriched", "editorial", "rendered")
CLIP_STAGES = ("discovered", "generated", "rendered")
STAGES = {EPISODE: EPISODE_STAGES, CLIP: CLIP_STAGES}


def stages_of(kind: str) -> tuple[str, ...]:
    try:
        return STAGES[kind]
    except KeyError:
        raise ValueError(f"unknown item kind {kind!r}; expected one of {', '.join(KINDS)}") from None


def next_stage(kind: str, stage: str | None) -> str | None:
    """The stage to run after `stage`, or None when the item is complete."""
    order = stages_of(kind)
    if stage is None:
        return order[0]
    i = order.index(stage)
    return order[i + 1] if i + 1 < len(order) else None


def previous_stage(kind: str, stage: str) -> str | None:
    order = stages_of(kind)
    i = order.index(stage)
    return order[i - 1] if i > 0 else None


def stage_index(kind: str, stage: str | None) -> int:
    """-1 for nothing complete, else the position of `stage`."""
    return -1 if stage is None else stages_of(kind).index(stage)


def check_stage(kind: str, stage: str) -> str:
    if stage not in stages_of(kind):
        raise ValueError(f"{stage!r} is not a {kind} stage; {kind} stages are: {', '.join(stages_of(kind))}")
    return stage


def later_stages(kind: str, stage: str | None) -> tuple[str, ...]:
    """Stages after `stage` (all of them for None)."""
    order = stages_of(kind)
    return order[stage_index(kind, stage) + 1 :]
