"""Episode stage `editorial`: pick the clip-worthy stretches of the transcript.

Each segment is scored by the keyword weight it carries per word. A candidate
is a run of consecutive segments whose span lies within [min_clip_seconds,
max_clip_seconds]; candidates are ranked by mean segment score and taken
greedily without overlap, up to max_clips. Clips are keyed c01, c02, ... in
time order, so a rerun on the same input declares the same clips (the engine
updates them instead of adding new ones) and a changed transcript updates
the existing keys rather than piling up orphans.
"""

from __future__ import annotations

import re

from .. import errors
from ..errors import StageError
from ..stages import StageContext
from .common import option, read_input, write_json
from .enrich import keyword_weights, weight_of


def score_segments(segments: list[dict], weights: dict[str, float]) -> list[float]:
    return [weight_of(seg["text"], weights) / max(1, len(seg["text"].split())) ** 0.5 for seg in segments]


def candidates(
    segments: list[dict], scores: list[float], min_len: float, max_len: float, duration: float
) -> list[dict]:
    found = []
    for i, first in enumerate(segments):
        total = 0.0
        for j in range(i, len(segments)):
            total += scores[j]
            start = first["start"]
            end = min(segments[j]["end"], duration) if duration else segments[j]["end"]
            span = end - start
            if span > max_len:
                if j == i:  # one long cue: cut it at the maximum length
                    found.append(
                        {"start": start, "end": start + max_len, "first": i, "last": j, "score": total}
                    )
                break
            if span >= min_len:
                found.append(
                    {"start": start, "end": end, "first": i, "last": j, "score": total / (j - i + 1)}
                )
    return found


def pick(found: list[dict], max_clips: int) -> list[dict]:
    chosen: list[dict] = []
    for cand in sorted(found, key=lambda c: (-round(c["score"], 9), c["start"], c["end"])):
        if len(chosen) >= max_clips:
            break
        if all(cand["end"] <= c["start"] or cand["start"] >= c["end"] for c in chosen):
            chosen.append(cand)
    return sorted(chosen, key=lambda c: c["start"])


def title_for(segments: list[dict], weights: dict[str, float], max_chars: int) -> str:
    text = " ".join(seg["text"] for seg in segments)
    lowered = f" {re.sub(r'[^a-z0-9]+', ' ', text.lower())} "
    present = sorted((w, phrase) for phrase, w in weights.items() if f" {phrase} " in lowered)
    best = max(segments, key=lambda seg: (weight_of(seg["text"], weights), -seg["start"]))
    words = best["text"].split()
    lead = " ".join(words[:8]).rstrip(",.;:") + ("…" if len(words) > 8 else "")
    if present:
        phrase = present[-1][1]
        title = f"{phrase[0].upper()}{phrase[1:]}: {lead}"
    else:
        title = lead
    return title if len(title) <= max_chars else title[: max_chars - 1].rstrip() + "…"


def run_editorial(ctx: StageContext) -> None:
    segments = read_input(ctx, "transcribed", "segments.json")["segments"]
    enrichment = read_input(ctx, "enriched", "enrichment.json")
    probe = read_input(ctx, "discovered", "probe.json")
    min_len = option(ctx, "min_clip_seconds", 15.0, float)
    max_len = option(ctx, "max_clip_seconds", 60.0, float)
    max_clips = option(ctx, "max_clips", 3, int)
    if not 0 < min_len <= max_len:
        raise StageError(
            errors.CONFIG_ERROR,
            f"[stages.episode.editorial] options: min_clip_seconds ({min_len}) must "
            f"be above 0 and not above max_clip_seconds ({max_len})",
            suggestion="Fix the clip length bounds in ewg.toml, then retry.",
        )
    weights = keyword_weights(enrichment.get("keywords", []))
    scores = score_segments(segments, weights)
    ctx.progress(0.3, "scoring segments")
    ctx.cancel.check()
    chosen = pick(
        candidates(segments, scores, min_len, max_len, float(probe.get("duration") or 0.0)), max_clips
    )
    clips = []
    for n, cand in enumerate(chosen, 1):
        key = f"c{n:02d}"
        start, end = round(cand["start"], 3), round(cand["end"], 3)
        title = title_for(
            segments[cand["first"] : cand["last"] + 1], weights, option(ctx, "title_max_chars", 80, int)
        )
        ctx.create_clip(key, start, end, title)
        clips.append(
            {
                "key": key,
                "start": start,
                "end": end,
                "title": title,
                "score": round(cand["score"], 6),
                "segments": [cand["first"], cand["last"]],
            }
        )
    if not clips:
        ctx.logger.warning("no clip candidates between %.1f and %.1f s", min_len, max_len)
    write_json(
        ctx.output_dir / "editorial.json",
        {"clips": clips, "min_clip_seconds": min_len, "max_clip_seconds": max_len, "max_clips": max_clips},
    )
    ctx.progress(1.0, f"{len(clips)} clips")
