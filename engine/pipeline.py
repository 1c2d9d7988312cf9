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

# What each built-in stage reads of earlier stages' checkpoints (engine/media): skip refuses to skip a
# stage whose output a later one reads, since that stage would fail on the missing input every attempt.
BUILTIN_READS: dict[tuple[str, str], tuple[str, ...]] = {
    (EPISODE, "transcribed"): ("discovered",),
    (EPISODE, "enriched"): ("transcribed",),
    (EPISODE, "editorial"): ("discovered", "transcribed", "enriched"),
    (EPISODE, "rendered"): ("discovered", "transcribed", "enriched", "editorial"),
    (CLIP, "rendered"): ("generated",),
}

# A clip whose episode reruns editorial (an operator verb) waits, stopped with this reason, until the new
# editorial run keeps it (redone from generated) or no longer picks it (discarded).
AWAITS_EDITORIAL = "waits for its episode's editorial rerun"


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


def first_stage(kind: str) -> str:
    """The first stage an item runs: a clip is born `discovered` (its episode's editorial cut it), so
    its first real stage is `generated`."""
    order = stages_of(kind)
    return order[1] if kind == CLIP else order[0]


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
