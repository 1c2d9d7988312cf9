"""Clip stages (issue 13): variants from the source range, pictures kept in YUV, byte-identical reruns
at the configured encoder thread count. The stage functions are called directly (the engine runs
them in a worker subprocess, where a profiler or a patched affinity would not reach)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media_helpers import make_ctx

from engine import errors
from engine.errors import StageError
from engine.media import clips
from engine.media.demo_media import write_test_video
from engine.stages import ItemInfo


def _luma(frame: av.VideoFrame) -> np.ndarray:
    return frame.reformat(format="gray").to_ndarray().astype(np.int16)


def _first_frame(path: Path) -> av.VideoFrame:
    with av.open(str(path)) as c:
        return next(c.decode(video=0))


def _source_frame_at(path: Path, t: float) -> av.VideoFrame:
    with av.open(str(path)) as c:
        fps = float(c.streams.video[0].average_rate)
        return next(f for f in c.decode(video=0) if f.time >= t - 0.5 / fps)


def _frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def _write_grey_video(path: Path, seconds: float, size: tuple[int, int], fps: int = 25) -> None:
    with av.open(str(path), mode="w", format="mp4") as out:
        vs = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), 128, np.uint8), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)


def test_variants_are_made_from_the_source_range_not_from_the_cut(processed, tmp_path):
    """Replace the cut with grey pictures: the variants still show the source at the clip's range."""
    clip, checkpoints = next(iter(processed["clips"].values()))
    generated = tmp_path / "generated"
    shutil.copytree(checkpoints["generated"], generated)
    meta = json.loads((generated / "clip.json").read_text())
    _write_grey_video(generated / "clip.mp4", meta["duration"], tuple(meta["sizes"][0]))
    ctx = make_ctx(
        clip, "rendered", tmp_path, inputs={"generated": generated}, parent_inputs=processed["checkpoints"]
    )
    clips.run_clip_rendered(ctx)
    render = json.loads((ctx.output_dir / "render.json").read_text())
    assert render["frames"] == meta["frames"] and render["duration"] == meta["duration"]
    source_first = _luma(_source_frame_at(Path(clip.source), clip.clip_start))
    landscape = _first_frame(ctx.output_dir / "landscape.mp4")
    assert landscape.pts == 0
    assert np.abs(_luma(landscape) - source_first).mean() < 4, "the 16:9 variant starts on the source's frame"
    assert _luma(landscape).std() > 20, "the grey cut must not be where the variant came from"
    assert (
        _frames(ctx.output_dir / "landscape.mp4")
        == _frames(ctx.output_dir / "portrait.mp4")
        == meta["frames"]
    )


def _conversions(run) -> list[str]:
    """Names of the picture conversions (to or from RGB/NumPy, or swscale) that run() makes from Python."""
    seen: list[str] = []
    watched = {"VideoFrame.to_ndarray", "av.video.frame.from_ndarray", "VideoFrame.reformat"}

    def profile(frame, event, arg):
        if event == "c_call":
            name = getattr(arg, "__qualname__", "")
            module = getattr(arg, "__module__", None)
            full = f"{module}.{name}" if module else name
            if full in watched:
                seen.append(full)

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return seen


def test_frames_stay_in_yuv_from_the_decoder_to_the_encoders(processed, tmp_path):
    clip, checkpoints = next(iter(processed["clips"].values()))
    gen = make_ctx(clip, "generated", tmp_path)
    assert _conversions(lambda: clips.run_generated(gen)) == []
    ren = make_ctx(
        clip,
        "rendered",
        tmp_path,
        inputs={"generated": checkpoints["generated"]},
        parent_inputs=processed["checkpoints"],
    )
    # Only the thumbnail, one frame, is converted (to the PNG encoder's RGB).
    assert _conversions(lambda: clips.run_clip_rendered(ren)) == ["VideoFrame.reformat"]
    assert (
        _frames(ren.output_dir / "portrait.mp4")
        == json.loads((checkpoints["generated"] / "clip.json").read_text())["frames"]
    )


def _x264_settings(path: Path) -> str:
    m = re.search(rb"x264 - core \d+ .*? options: ([^\x00]*)", path.read_bytes())
    assert m, f"{path} has no x264 settings SEI"
    return m.group(1).decode()


@pytest.mark.skipif("libx264" not in av.codecs_available, reason="needs libx264")
def test_reruns_at_the_configured_thread_count_give_identical_bytes(tmp_path, monkeypatch):
    """encoder_threads = 0 means one thread per core the process may use; two runs at that count
    (3 here) give the same bytes for the cut and both variants, with x264's frame threads."""
    source = tmp_path / "show" / "episode.mp4"
    write_test_video(source, seconds=3.0, seed=5, width=320, height=180)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    transcribed = tmp_path / "transcribed"
    transcribed.mkdir()
    (transcribed / "segments.json").write_text(
        json.dumps({"segments": [{"start": 0.5, "end": 1.5, "text": "hi"}]})
    )
    clip = ItemInfo("ep_2026-01-05__c01", "clip", str(source), "Show", "A clip", "ep_2026-01-05", 0.52, 2.5)
    runs = []
    for n in range(2):
        root = tmp_path / f"run{n}"
        gen = make_ctx(clip, "generated", root)
        clips.run_generated(gen)
        ren = make_ctx(
            clip,
            "rendered",
            root,
            inputs={"generated": gen.output_dir},
            parent_inputs={"transcribed": transcribed},
        )
        clips.run_clip_rendered(ren)
        files = [
            gen.output_dir / "clip.mp4",
            ren.output_dir / "landscape.mp4",
            ren.output_dir / "portrait.mp4",
        ]
        runs.append([f.read_bytes() for f in files])
        for f in files:
            settings = _x264_settings(f)
            assert " threads=3 " in f" {settings} " and "sliced_threads=0" in settings, settings
            assert "mbtree=0" in settings, settings
    assert runs[0] == runs[1]


def test_negative_encoder_threads_is_a_config_error_naming_the_key(processed, tmp_path):
    clip, _ = next(iter(processed["clips"].values()))
    ctx = make_ctx(clip, "generated", tmp_path, options={"encoder_threads": -1})
    with pytest.raises(StageError) as info:
        clips.run_generated(ctx)
    assert info.value.error_class == errors.CONFIG_ERROR and "options.encoder_threads" in info.value.message
