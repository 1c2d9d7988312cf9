"""Clip stages: `generated` cuts the clip from the episode's source, `rendered`
makes the publishable variants (16:9 and 9:16 centre crops, captions, thumbnail).

Cuts are decoded and re-encoded, not stream-copied: a copy can only start on
a keyframe, which would miss the requested range by seconds. Video frames
whose time falls in [start, end) are kept and re-stamped at a constant rate,
so the clip lasts (end - start) within one frame; audio is trimmed to the
sample.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .. import errors
from ..errors import StageError
from ..stages import StageContext
from .captions import clip_segments, to_srt
from .common import option, read_input, write_json
from .probe import corrupt, ffmpeg_reason

Crop = Callable[[np.ndarray], np.ndarray]


@dataclass
class Output:
    path: Path
    crop: Crop | None = None  # applied to the RGB frame before encoding
    size: tuple[int, int] | None = None  # (width, height) to scale to after cropping; None keeps the crop


def _even(n: float) -> int:
    return max(2, int(n) // 2 * 2)


def centre_crop(width: int, height: int, aspect: Fraction) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the largest centred box of `aspect` (width/height) inside the frame; even sizes for H.264."""
    if Fraction(width, height) > aspect:
        w, h = _even(height * aspect), _even(height)
    else:
        w, h = _even(width), _even(width / aspect)
    return (width - w) // 2, (height - h) // 2, w, h


def cropper(width: int, height: int, aspect: Fraction) -> tuple[Crop, tuple[int, int]]:
    x, y, w, h = centre_crop(width, height, aspect)
    return (lambda img: img[y : y + h, x : x + w]), (w, h)


def _video_codec() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def transcode(
    src: Path,
    start: float,
    end: float,
    outputs: list[Output],
    ctx: StageContext,
    thumbnail_at: float | None = None,
    what: str = "cutting",
) -> dict:
    """Decode [start, end) of `src` once and encode it into every output; returns frame counts and sizes."""
    try:
        inp = av.open(str(src), mode="r")
    except av.error.FFmpegError as exc:
        raise corrupt(src, f"cannot be opened: {ffmpeg_reason(exc)}") from None
    with inp:
        if not inp.streams.video:
            raise StageError(
                errors.PERSISTENT,
                f"{src} has no video stream, so no clip can be cut from it",
                suggestion="Skip the clip stages for audio-only episodes (s).",
            )
        vin = inp.streams.video[0]
        ain = inp.streams.audio[0] if inp.streams.audio else None
        fps = vin.average_rate or vin.guessed_rate or Fraction(25)
        fps = Fraction(fps).limit_denominator(1001)
        width, height = vin.codec_context.width, vin.codec_context.height
        containers, vouts, aouts = [], [], []
        try:
            for out in outputs:
                oc = av.open(str(out.path), mode="w", format="mp4")
                containers.append(oc)
                crop_w, crop_h = (
                    out.crop(np.zeros((height, width, 3), np.uint8)).shape[1::-1]
                    if out.crop
                    else (width, height)
                )
                w, h = out.size or (crop_w, crop_h)
                vs = oc.add_stream(_video_codec(), rate=fps)
                vs.width, vs.height, vs.pix_fmt = _even(w), _even(h), "yuv420p"
                if vs.name == "libx264":
                    vs.codec_context.options = {
                        "preset": option(ctx, "preset", "veryfast", str),
                        "crf": str(option(ctx, "crf", 23, int)),
                    }
                    # Threaded x264 is not byte-for-byte repeatable, and a rerun must give the same
                    # files; sites that prefer speed set encoder_threads = 0 (one per core).
                    vs.codec_context.thread_count = option(ctx, "encoder_threads", 1, int)
                vouts.append(vs)
                aouts.append(
                    oc.add_stream("aac", rate=ain.codec_context.sample_rate, layout=ain.layout.name)
                    if ain is not None
                    else None
                )
            info = _pump(
                inp, vin, ain, fps, start, end, outputs, containers, vouts, aouts, ctx, thumbnail_at, what
            )
            for oc, vs, as_ in zip(containers, vouts, aouts):
                for packet in vs.encode(None):
                    oc.mux(packet)
                if as_ is not None:
                    for packet in as_.encode(None):
                        oc.mux(packet)
        except av.error.FFmpegError as exc:
            raise corrupt(src, f"decoding failed: {ffmpeg_reason(exc)}") from None
        finally:
            for oc in containers:
                oc.close()
    info.update(
        fps=float(fps),
        source_width=width,
        source_height=height,
        sizes=[[vs.width, vs.height] for vs in vouts],
    )
    return info


def _pump(inp, vin, ain, fps, start, end, outputs, containers, vouts, aouts, ctx, thumbnail_at, what) -> dict:
    half = 0.5 / float(fps)
    rate = ain.codec_context.sample_rate if ain is not None else 0
    resampler = (
        av.AudioResampler(format="fltp", layout=ain.layout.name, rate=rate) if ain is not None else None
    )
    frames = samples = 0
    video_done, audio_done = False, ain is None
    thumb = None
    span = max(end - start, 1e-6)
    inp.seek(int(max(0.0, start) * av.time_base), backward=True, any_frame=False)
    for frame in inp.decode(*(s for s in (vin, ain) if s is not None)):
        if frame.time is None:
            continue
        if isinstance(frame, av.VideoFrame):
            if video_done or frame.time < start - half:
                continue
            if frame.time >= end - half:
                video_done = True
            else:
                rgb = frame.to_ndarray(format="rgb24")
                if thumbnail_at is not None and (
                    thumb is None or abs(frame.time - thumbnail_at) < abs(thumb[0] - thumbnail_at)
                ):
                    thumb = (frame.time, rgb)
                for out, oc, vs in zip(outputs, containers, vouts):
                    img = np.ascontiguousarray(out.crop(rgb)) if out.crop else rgb
                    # Convert (and scale) here: leaving it to the encoder's implicit conversion
                    # makes the output differ between runs, and reruns must give identical files.
                    vf = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(
                        width=vs.width, height=vs.height, format="yuv420p"
                    )
                    vf.pts, vf.time_base = frames, Fraction(1) / fps
                    for packet in vs.encode(vf):
                        oc.mux(packet)
                frames += 1
                if frames % 10 == 0:
                    ctx.cancel.check()
                    ctx.progress(
                        min(0.95, (frame.time - start) / span),
                        f"{what} {frame.time - start:.1f}/{span:.1f} s",
                    )
        elif not audio_done:
            for af in resampler.resample(frame):
                t0 = float(af.pts * af.time_base) if af.pts is not None else frame.time
                data = af.to_ndarray()
                s0 = max(0, int(round((start - t0) * rate)))
                s1 = min(data.shape[1], int(round((end - t0) * rate)))
                if t0 >= end:
                    audio_done = True
                if s1 <= s0:
                    continue
                for oc, as_ in zip(containers, aouts):
                    piece = av.AudioFrame.from_ndarray(
                        np.ascontiguousarray(data[:, s0:s1]), format="fltp", layout=af.layout.name
                    )
                    piece.sample_rate, piece.pts, piece.time_base = rate, samples, Fraction(1, rate)
                    for packet in as_.encode(piece):
                        oc.mux(packet)
                samples += s1 - s0
        if video_done and audio_done:
            break
    if frames == 0:
        raise StageError(
            errors.PERSISTENT,
            f"no video frames between {start:.2f} s and {end:.2f} s in {inp.name}",
            suggestion="The clip range lies outside the video: rerun the episode's editorial stage (R).",
        )
    return {
        "frames": frames,
        "duration": round(frames / float(fps), 6),
        "audio_samples": samples,
        "thumbnail": thumb,
    }


def run_generated(ctx: StageContext) -> None:
    item = ctx.item
    if item.clip_start is None or item.clip_end is None or item.clip_end <= item.clip_start:
        raise StageError(
            errors.PERSISTENT,
            f"clip {item.id} has no valid time range ({item.clip_start}, {item.clip_end})",
            suggestion="Rerun the episode's editorial stage (R) to recreate its clips.",
        )
    source = Path(item.source)
    if not source.is_file():
        raise StageError(
            errors.PERSISTENT,
            f"the episode source {source} does not exist",
            suggestion="Restore the source file, then retry (r).",
        )
    ctx.progress(0.0, f"cutting {item.clip_start:.1f}-{item.clip_end:.1f} s")
    info = transcode(source, item.clip_start, item.clip_end, [Output(ctx.output_dir / "clip.mp4")], ctx)
    info.pop("thumbnail")
    write_json(
        ctx.output_dir / "clip.json",
        {
            "source": str(source),
            "start": item.clip_start,
            "end": item.clip_end,
            "file": "clip.mp4",
            "title": item.title,
            **info,
        },
    )
    ctx.progress(1.0, f"{info['frames']} frames")


def _size(ctx: StageContext, key: str) -> tuple[int, int] | None:
    value = option(ctx, key, None, str)
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", value)
    if not m or int(m.group(1)) < 2 or int(m.group(2)) < 2:
        raise StageError(
            errors.CONFIG_ERROR,
            f'[stages.clip.rendered] options.{key} must look like "1280x720", got {value!r}',
            suggestion=f"Fix options.{key}, then retry (r).",
        )
    return int(m.group(1)), int(m.group(2))


def encode_image(rgb: np.ndarray, path: Path) -> None:
    """PNG or JPEG (by suffix) with PyAV's own encoders: no imaging library needed."""
    codec = "mjpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "png"
    cc = av.CodecContext.create(codec, "w")
    h, w = rgb.shape[:2]
    cc.width, cc.height = w, h
    cc.pix_fmt = "yuvj420p" if codec == "mjpeg" else "rgb24"
    cc.time_base = Fraction(1, 1)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    if codec == "mjpeg":
        frame = frame.reformat(format="yuvj420p")
    frame.pts = 0
    data = b"".join(bytes(p) for p in [*cc.encode(frame), *cc.encode(None)])
    path.write_bytes(data)


def run_clip_rendered(ctx: StageContext) -> None:
    clip = read_input(ctx, "generated", "clip.json")
    clip_file = Path(ctx.inputs["generated"]) / clip["file"]
    segments = read_input(ctx, "transcribed", "segments.json", parent=True)["segments"]
    width, height = clip["sizes"][0]
    landscape_crop, _ = cropper(width, height, Fraction(16, 9))
    portrait_crop, _ = cropper(width, height, Fraction(9, 16))
    outputs = [
        Output(ctx.output_dir / "landscape.mp4", landscape_crop, _size(ctx, "landscape_size")),
        Output(ctx.output_dir / "portrait.mp4", portrait_crop, _size(ctx, "portrait_size")),
    ]
    duration = float(clip["duration"])
    at = option(ctx, "thumbnail_at", 0.5, float)
    info = transcode(
        clip_file,
        0.0,
        duration,
        outputs,
        ctx,
        thumbnail_at=duration * min(max(at, 0.0), 1.0),
        what="rendering",
    )
    thumb_name = "thumbnail." + option(ctx, "thumbnail_format", "png", str).lower().lstrip(".")
    if thumb_name not in ("thumbnail.png", "thumbnail.jpg", "thumbnail.jpeg"):
        raise StageError(
            errors.CONFIG_ERROR,
            "[stages.clip.rendered] options.thumbnail_format must be png or jpg",
            suggestion="Fix options.thumbnail_format, then retry (r).",
        )
    encode_image(info["thumbnail"][1], ctx.output_dir / thumb_name)
    cues = clip_segments(segments, float(clip["start"]), float(clip["end"]))
    (ctx.output_dir / "captions.srt").write_text(to_srt(cues), encoding="utf-8")
    write_json(
        ctx.output_dir / "render.json",
        {
            "title": ctx.item.title,
            "start": clip["start"],
            "end": clip["end"],
            "duration": info["duration"],
            "frames": info["frames"],
            "landscape": {"file": "landscape.mp4", "size": info["sizes"][0]},
            "portrait": {"file": "portrait.mp4", "size": info["sizes"][1]},
            "captions": "captions.srt",
            "cues": len(cues),
            "thumbnail": thumb_name,
            "thumbnail_time": round(info["thumbnail"][0], 6),
        },
    )
    ctx.progress(1.0, "variants written")
