"""Caption files: SRT and WebVTT in, SRT out.

A segment is `{"start": s, "end": s, "text": str}` with seconds as floats; it is
the transcript format every later stage reads (segments.json).
"""

from __future__ import annotations

import re
from pathlib import Path

_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")
_ARROW = re.compile(rf"({_TIME.pattern})\s*-->\s*({_TIME.pattern})")
_TAG = re.compile(r"<[^>]+>")


class CaptionError(ValueError):
    """A caption file that cannot be read as SRT or WebVTT."""


def _seconds(h: str | None, m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def parse_captions(text: str) -> list[dict]:
    """Cues of an SRT or WebVTT document, in time order; styling tags are dropped."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    segments: list[dict] = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.strip().split("\n")]
        for i, line in enumerate(lines):
            m = _ARROW.search(line)
            if not m:
                continue
            g = m.groups()
            start = _seconds(g[1], g[2], g[3], g[4])
            end = _seconds(g[6], g[7], g[8], g[9])
            words = " ".join(_TAG.sub("", ln) for ln in lines[i + 1 :] if ln)
            words = re.sub(r"\s+", " ", words).strip()
            if words and end > start:
                segments.append({"start": round(start, 3), "end": round(end, 3), "text": words})
            break
    segments.sort(key=lambda seg: (seg["start"], seg["end"]))
    return segments


def read_caption_file(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CaptionError(f"{path} cannot be read: {exc}") from None
    segments = parse_captions(text)
    if not segments:
        raise CaptionError(f"{path} has no caption cues (expected SRT or WebVTT 'start --> end' lines)")
    return segments


def srt_time(seconds: float) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    return f"{ms // 3_600_000:02d}:{ms % 3_600_000 // 60_000:02d}:{ms % 60_000 // 1000:02d},{ms % 1000:03d}"


def to_srt(segments: list[dict]) -> str:
    blocks = [
        f"{n}\n{srt_time(seg['start'])} --> {srt_time(seg['end'])}\n{seg['text']}\n"
        for n, seg in enumerate(segments, 1)
    ]
    return "\n".join(blocks)


def clip_segments(segments: list[dict], start: float, end: float) -> list[dict]:
    """The cues overlapping [start, end], shifted to start at 0 and clamped to the clip."""
    out = []
    for seg in segments:
        if seg["end"] <= start or seg["start"] >= end:
            continue
        s = max(seg["start"], start) - start
        e = min(seg["end"], end) - start
        if e - s >= 0.05:  # a sliver of a cue at the edge would flash unreadably
            out.append({"start": round(s, 3), "end": round(e, 3), "text": seg["text"]})
    return out
