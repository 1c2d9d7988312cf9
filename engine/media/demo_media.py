"""Synthetic AI-EWG episodes made with PyAV, for `ewg demo` and the tests.

Each good episode is a few seconds of a moving test pattern (160x90) with a
tone, in a show folder, with an SRT of generated speech-like text. The bad
inputs show the recovery paths on real files: a truncated video (corrupt
source), a video with no captions (missing dependency when there is no
Whisper), a zero-byte file (corrupt source) and a file still being copied
(fresh mtime: the scanner waits). Everything is seeded and local: no network.
"""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .captions import to_srt
from .discovery import humanise_title, make_item_id, show_slug

SHOWS = ("AI Weekly", "Deep Dive", "Lab Notes")
SUBJECTS = (
    "neural networks",
    "language models",
    "GPU clusters",
    "robotics",
    "data privacy",
    "open source models",
    "edge devices",
    "reinforcement learning",
    "chip design",
    "model evaluation",
)
VERBS = (
    "changes how we think about",
    "makes it cheaper to build",
    "is reshaping",
    "raises new questions about",
    "finally explains",
    "depends heavily on",
)
OPENERS = (
    "Today we talk about",
    "Our guest explains",
    "Let us look at",
    "The big story this week is",
    "Here is why",
    "Researchers found that",
)
CLOSERS = (
    "and what it means for developers.",
    "in real production systems.",
    "for small teams.",
    "according to the latest benchmarks.",
    "and the trade-offs involved.",
    "in the next few years.",
)

EPOCH = datetime(2026, 1, 5, 12, 0, tzinfo=UTC).timestamp()  # demo episodes are dated from here


def write_test_video(
    path: Path,
    seconds: float,
    seed: int,
    width: int = 160,
    height: int = 90,
    fps: int = 25,
    sample_rate: int = 22050,
    tone_hz: float = 440.0,
) -> None:
    """An MP4 with a moving bar over a gradient (H.264) and a sine tone (AAC)."""
    rng = np.random.default_rng(seed)
    base = np.zeros((height, width, 3), dtype=np.uint8)
    base[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    base[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    base[..., 2] = int(rng.integers(40, 200))
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as out:
        video = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.options = {"preset": "ultrafast"} if video.name == "libx264" else {}
        video.codec_context.thread_count = 1  # repeatable demo files for a given seed
        audio = out.add_stream("aac", rate=sample_rate, layout="mono")
        frames = int(round(seconds * fps))
        for i in range(frames):
            img = base.copy()
            x = int(i * 4) % width
            img[:, x : x + 8] = 255
            # Explicit conversion: the encoder's implicit one is not repeatable byte for byte.
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        chunk = 1024
        total = int(seconds * sample_rate)
        t = np.arange(total) / sample_rate
        wave = (0.2 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
        for start in range(0, total, chunk):
            samples = wave[start : start + chunk]
            frame = av.AudioFrame.from_ndarray(samples[None, :], format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, sample_rate)
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)


def speech_segments(seconds: float, rng: random.Random, cue: float = 1.2) -> list[dict]:
    """Caption cues of plausible talk-show sentences, one every `cue` seconds."""
    segments = []
    t = 0.0
    while t + 0.4 < seconds:
        end = min(seconds, t + cue)
        sentence = (
            f"{rng.choice(OPENERS)} {rng.choice(SUBJECTS)}, which {rng.choice(VERBS)} "
            f"{rng.choice(SUBJECTS)} {rng.choice(CLOSERS)}"
        )
        segments.append({"start": round(t, 3), "end": round(end - 0.05, 3), "text": sentence})
        t = end
    return segments


def _set_mtime(path: Path, ts: float) -> None:
    os.utime(path, (ts, ts))


def generate_demo_media(
    folder: Path,
    count: int,
    seed: int,
    seconds: float = 4.0,
    bad_inputs: bool = True,
    now: float | None = None,
) -> list[dict]:
    """Write `count` good episodes (plus the bad inputs) under folder/<show>/ and describe each.

    Returns dicts with id, source, show, title and expectation (what the pipeline
    should do with it: "ok", "corrupt source", "missing dependency", "waiting").
    The ids are the ones `discovery.scan_sources` assigns, because mtimes are set
    to fixed dates (one day apart) so ids are reproducible.
    """
    folder = Path(folder)
    rng = random.Random(seed)
    now = datetime.now(UTC).timestamp() if now is None else now
    made: list[dict] = []

    def record(path: Path, show: str, number: int, mtime: float, expectation: str) -> None:
        made.append(
            {
                "id": make_item_id(show_slug(show), number, mtime),
                "source": str(path),
                "show": show,
                "title": humanise_title(path.stem),
                "expectation": expectation,
            }
        )

    numbers = {show: 0 for show in SHOWS}
    day = 0

    def next_slot(show: str) -> tuple[int, float]:
        nonlocal day
        numbers[show] += 1
        day += 1
        return numbers[show], EPOCH + day * 86400

    for i in range(count):
        show = SHOWS[i % len(SHOWS)]
        number, mtime = next_slot(show)
        subject = rng.choice(SUBJECTS)
        path = folder / show / f"Episode {number:03d} - {subject[0].upper() + subject[1:]}.mp4"
        write_test_video(path, seconds, seed * 1000 + i, tone_hz=330.0 + 55.0 * (i % 5))
        path.with_suffix(".srt").write_text(to_srt(speech_segments(seconds, rng)), encoding="utf-8")
        _set_mtime(path.with_suffix(".srt"), mtime)
        _set_mtime(path, mtime)
        record(path, show, number, mtime, "ok")
    if not bad_inputs:
        return made
    show = SHOWS[-1]

    number, mtime = next_slot(show)
    path = folder / show / f"Episode {number:03d} - Truncated Upload.mp4"
    write_test_video(path, seconds, seed + 7)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 5])  # PyAV writes the index (moov) last: cutting loses it
    path.with_suffix(".srt").write_text(to_srt(speech_segments(seconds, rng)), encoding="utf-8")
    _set_mtime(path, mtime)
    record(path, show, number, mtime, "corrupt source")

    number, mtime = next_slot(show)
    path = folder / show / f"Episode {number:03d} - No Captions.mp4"
    write_test_video(path, seconds, seed + 8)
    _set_mtime(path, mtime)
    record(path, show, number, mtime, "missing dependency")

    number, mtime = next_slot(show)
    path = folder / show / f"Episode {number:03d} - Empty File.mp4"
    path.write_bytes(b"")
    _set_mtime(path, mtime)
    record(path, show, number, mtime, "corrupt source")

    number, _ = next_slot(show)
    path = folder / show / f"Episode {number:03d} - Still Copying.mp4"
    write_test_video(path, seconds, seed + 9)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    _set_mtime(path, now)  # written just now: the scanner waits for it to settle
    record(path, show, number, now, "waiting")
    return made
