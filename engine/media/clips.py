"""Clip stages: `generated` cuts the clip from the episode's source, `rendered`
makes the publishable variants (16:9 and 9:16 centre crops, captions, thumbnail).
ARCHITECTURE.md contracts 4 (errors name their class) and 7 (a stage writes only its checkpoint).

Cuts are decoded and re-encoded, not stream-copied: a copy can only start on
a keyframe, which would miss the requested range by seconds. Video frames
whose time falls in [start, end) are kept and re-stamped at a constant rate,
so the clip lasts (end - start) within one frame; audio is trimmed to the
sample.

Both stages read the source range, so every output is one generation from the
source (the variants are never a re-encode of the cut). Pictures stay in the
decoder's YUV all the way: one FFmpeg filter graph per decode (buffer -> split
-> crop/scale/format per output -> buffersink), the same filters the ffmpeg
command line would run, and no frame goes through RGB or NumPy; only the
thumbnail, one frame, is converted for the image encoder.

Encoders use `encoder_threads` threads (0, the default: one per core this
process may run on). For a fixed thread count x264 gives the same bytes run
after run once its macroblock tree is off (x264_params says why);
tests/media/test_clips.py checks two runs byte for byte. The bytes differ
between thread counts, so a rerun with another count (another machine's
cores) gives other, equally valid, files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.filter import Graph
from av.video.frame import PictureType

from .. import errors
from ..errors import StageError
from ..stages import StageContext
from .captions import clip_segments, to_srt
from .common import option, read_input, write_json
from .probe import corrupt, ffmpeg_reason

ENCODED_PIX_FMT = "yuv420p"


@dataclass(frozen=True)
class Output:
    path: Path
    aspect: Fraction | None = None  # centre crop to this width/height; None keeps the whole frame
    size: tuple[int, int] | None = None  # (width, height) to scale to after cropping; None keeps the crop


@dataclass(frozen=True)
class Encoding:
    """How every video of one stage is encoded."""

    threads: int  # encoder, decoder and filter threads; resolved, never 0
    preset: str = "veryfast"
    crf: int = 23
    mbtree: bool = False  # x264's macroblock tree: smaller files, but not byte-repeatable (x264_params)


# x264's macroblock tree does not give the same bytes run after run for some picture sizes, even
# on one thread: a 100x180 9:16 crop gave 4 distinct files in 20 runs at 1 thread and 5 in 30 at 2
# (frame or sliced threads alike); with mbtree=0, 1 in 30 both ways. 96, 112, 128 px wide, 404x720
# and 1280x720 were stable either way. Reruns must reproduce their files, so it is off unless
# options.x264_mbtree = true, which makes files about a third smaller at the same crf.
def x264_params(enc: Encoding) -> dict[str, str]:
    return {"x264-params": f"mbtree={int(enc.mbtree)}"}


def _even(n: float) -> int:
    return max(2, int(n) // 2 * 2)


def centre_crop(width: int, height: int, aspect: Fraction) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the largest centred box of `aspect` (width/height) inside the frame; even sizes for H.264."""
    if Fraction(width, height) > aspect:
        w, h = _even(height * aspect), _even(height)
    else:
        w, h = _even(width), _even(width / aspect)
    return (width - w) // 2, (height - h) // 2, w, h


def video_filters(width: int, height: int, out: Output) -> tuple[list[tuple[str, str]], tuple[int, int]]:
    """The FFmpeg filters that turn a (width x height) source picture into `out`, and the size they make."""
    chain: list[tuple[str, str]] = []
    w, h = width, height
    if out.aspect is not None:
        x, y, w, h = centre_crop(width, height, out.aspect)
        if (w, h) != (width, height):
            chain.append(("crop", f"{w}:{h}:{x}:{y}"))
    if out.size is not None or w % 2 or h % 2:
        sw, sh = out.size or (w, h)
        w, h = _even(sw), _even(sh)
        chain.append(("scale", f"{w}:{h}"))
    chain.append(("format", ENCODED_PIX_FMT))
    return chain, (w, h)


def filter_text(chain: list[tuple[str, str]]) -> str:
    """The chain in ffmpeg's -filter_complex syntax (the benchmark runs the same filters)."""
    return ",".join(f"{name}={args}" for name, args in chain)


def engine_cores() -> int:
    """The cores this process may run on (its CPU affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def encoding(ctx: StageContext) -> Encoding:
    threads = option(ctx, "encoder_threads", 0, int)
    if threads < 0:
        raise StageError(
            errors.CONFIG_ERROR,
            f"[stages.clip.{ctx.stage}] options.encoder_threads must be 0 (one per core) or more, got {threads}",
            suggestion="Fix options.encoder_threads in ewg.toml, then retry.",
        )
    return Encoding(
        threads=threads or engine_cores(),
        preset=option(ctx, "preset", "veryfast", str),
        crf=option(ctx, "crf", 23, int),
        mbtree=option(ctx, "x264_mbtree", False, bool),
    )


def _video_codec() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


class FilterGraph:
    """One decoded picture in, one filtered picture per output out (FFmpeg's filter graph, in YUV)."""

    def __init__(
        self, frame: av.VideoFrame, fps: Fraction, chains: list[list[tuple[str, str]]], threads: int
    ):
        self.graph = Graph()
        self.graph.threads = threads
        source = self.graph.add_buffer(
            width=frame.width, height=frame.height, format=frame.format, time_base=1 / fps
        )
        split = self.graph.add("split", str(len(chains)))
        source.link_to(split)
        self.sinks = []
        for i, chain in enumerate(chains):
            node, pad = split, i
            for name, args in chain:
                nxt = self.graph.add(name, args)
                node.link_to(nxt, pad, 0)
                node, pad = nxt, 0
            sink = self.graph.add("buffersink")
            node.link_to(sink, pad, 0)
            self.sinks.append(sink)
        self.graph.configure()
        self.source = source

    def push(self, frame: av.VideoFrame | None) -> list[list[av.VideoFrame]]:
        """Feed one frame (None: the end) and return what each output's sink has ready."""
        self.source.push(frame)
        ready = []
        for sink in self.sinks:
            got = []
            while True:
                try:
                    got.append(sink.pull())
                except (av.error.BlockingIOError, av.error.EOFError):
                    break
            ready.append(got)
        return ready


def transcode(
    src: Path,
    start: float,
    end: float,
    outputs: list[Output],
    ctx: StageContext,
    enc: Encoding,
    thumbnail_at: float | None = None,
    what: str = "cutting",
) -> dict:
    """Decode [start, end) of `src` once and encode it into every output; returns frame counts and sizes.

    `thumbnail_at` (seconds from `start`) keeps the decoded frame nearest to it as info["thumbnail"]."""
    try:
        inp = av.open(str(src), mode="r")
    except av.error.FFmpegError as exc:
        raise corrupt(src, f"cannot be opened: {ffmpeg_reason(exc)}") from None
    with inp:
        if not inp.streams.video:
            raise StageError(
                errors.PERSISTENT,
                f"{src} has no video stream, so no clip can be cut from it",
                suggestion="Skip the stage: audio-only episodes have no clips to render.",
            )
        vin = inp.streams.video[0]
        vin.thread_type, vin.thread_count = "AUTO", enc.threads  # frame threads: the same pictures, sooner
        ain = inp.streams.audio[0] if inp.streams.audio else None
        fps = vin.average_rate or vin.guessed_rate or Fraction(25)
        fps = Fraction(fps).limit_denominator(1001)
        width, height = vin.codec_context.width, vin.codec_context.height
        chains, sizes = zip(*(video_filters(width, height, out) for out in outputs))
        containers, vouts, aouts = [], [], []
        try:
            for out, (w, h) in zip(outputs, sizes):
                oc = av.open(str(out.path), mode="w", format="mp4")
                containers.append(oc)
                vs = oc.add_stream(_video_codec(), rate=fps)
                vs.width, vs.height, vs.pix_fmt = w, h, ENCODED_PIX_FMT
                if vs.name == "libx264":
                    vs.codec_context.options = {"preset": enc.preset, "crf": str(enc.crf), **x264_params(enc)}
                # FRAME as ffmpeg's command line does (PyAV's default, SLICE, makes x264 use sliced
                # threads: larger files for the same quality). Deterministic for a fixed count.
                vs.codec_context.thread_type, vs.codec_context.thread_count = "FRAME", enc.threads
                vouts.append(vs)
                aouts.append(
                    oc.add_stream("aac", rate=ain.codec_context.sample_rate, layout=ain.layout.name)
                    if ain is not None
                    else None
                )
            info = _pump(
                inp,
                vin,
                ain,
                fps,
                span=(start, end),
                chains=list(chains),
                containers=containers,
                vouts=vouts,
                aouts=aouts,
                ctx=ctx,
                enc=enc,
                thumbnail_at=thumbnail_at,
                what=what,
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
    info.update(fps=float(fps), source_width=width, source_height=height, sizes=[list(s) for s in sizes])
    return info


def _encode(frames_per_output, containers, vouts) -> None:
    for got, oc, vs in zip(frames_per_output, containers, vouts):
        for vf in got:
            for packet in vs.encode(vf):
                oc.mux(packet)


def _pump(
    inp, vin, ain, fps, *, span, chains, containers, vouts, aouts, ctx, enc, thumbnail_at, what
) -> dict:
    start, end = span
    half = 0.5 / float(fps)
    rate = ain.codec_context.sample_rate if ain is not None else 0
    resampler = (
        av.AudioResampler(format="fltp", layout=ain.layout.name, rate=rate) if ain is not None else None
    )
    frames = samples = 0
    video_done, audio_done = False, ain is None
    graph: FilterGraph | None = None
    thumb: tuple[int, av.VideoFrame] | None = None  # (index in the clip, decoded frame)
    length = max(end - start, 1e-6)
    inp.seek(int(max(0.0, start) * av.time_base), backward=True, any_frame=False)
    for frame in inp.decode(*(s for s in (vin, ain) if s is not None)):
        t = frame.time
        if t is None:
            continue
        if isinstance(frame, av.VideoFrame):
            if video_done or t < start - half:
                continue
            if t >= end - half:
                video_done = True
            else:
                if graph is None:
                    graph = FilterGraph(frame, fps, chains, enc.threads)
                if thumbnail_at is not None and (
                    thumb is None or abs(frames / fps - thumbnail_at) < abs(thumb[0] / fps - thumbnail_at)
                ):
                    thumb = (frames, frame)
                frame.pts, frame.time_base = frames, 1 / fps
                # libx264 obeys a frame's picture type: the source's I/P/B pattern would be forced on
                # the encoder (files a third larger); ffmpeg's command line clears it the same way.
                frame.pict_type = PictureType.NONE
                _encode(graph.push(frame), containers, vouts)
                frames += 1
                if frames % 10 == 0:
                    ctx.cancel.check()
                    ctx.progress(
                        min(0.95, (t - start) / length),
                        f"{what} {t - start:.1f}/{length:.1f} s",
                    )
        elif not audio_done:
            for af in resampler.resample(frame):
                t0 = float(af.pts * af.time_base) if af.pts is not None else t
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
            suggestion="The clip range lies outside the video: force reprocess the episode from editorial.",
        )
    _encode(graph.push(None), containers, vouts)
    return {
        "frames": frames,
        "duration": round(frames / float(fps), 6),
        "audio_samples": samples,
        "thumbnail": None if thumb is None else (thumb[0] / float(fps), thumb[1]),
    }


def _source(ctx: StageContext, path: str) -> Path:
    source = Path(path)
    if not source.is_file():
        raise StageError(
            errors.PERSISTENT,
            f"the episode source {source} does not exist",
            suggestion="Restore the source file, then retry.",
        )
    return source


def run_generated(ctx: StageContext) -> None:
    item = ctx.item
    if item.clip_start is None or item.clip_end is None or item.clip_end <= item.clip_start:
        raise StageError(
            errors.PERSISTENT,
            f"clip {item.id} has no valid time range ({item.clip_start}, {item.clip_end})",
            suggestion="Force reprocess the episode from editorial to recreate its clips.",
        )
    source = _source(ctx, item.source)
    enc = encoding(ctx)
    ctx.progress(0.0, f"cutting {item.clip_start:.1f}-{item.clip_end:.1f} s")
    info = transcode(source, item.clip_start, item.clip_end, [Output(ctx.output_dir / "clip.mp4")], ctx, enc)
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
            suggestion=f"Fix options.{key}, then retry.",
        )
    return int(m.group(1)), int(m.group(2))


def encode_image(frame: av.VideoFrame, path: Path) -> None:
    """PNG or JPEG (by suffix) of one decoded frame with PyAV's own encoders: no imaging library needed."""
    codec = "mjpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "png"
    cc = av.CodecContext.create(codec, "w")
    cc.width, cc.height = frame.width, frame.height
    cc.pix_fmt = "yuvj420p" if codec == "mjpeg" else "rgb24"
    cc.time_base = Fraction(1, 1)
    picture = frame.reformat(format=cc.pix_fmt)
    picture.pts = 0
    data = b"".join(bytes(p) for p in [*cc.encode(picture), *cc.encode(None)])
    path.write_bytes(data)


def run_clip_rendered(ctx: StageContext) -> None:
    clip = read_input(ctx, "generated", "clip.json")
    segments = read_input(ctx, "transcribed", "segments.json", parent=True)["segments"]
    thumb_name = "thumbnail." + option(ctx, "thumbnail_format", "png", str).lower().lstrip(".")
    if thumb_name not in ("thumbnail.png", "thumbnail.jpg", "thumbnail.jpeg"):
        raise StageError(
            errors.CONFIG_ERROR,
            "[stages.clip.rendered] options.thumbnail_format must be png or jpg",
            suggestion="Fix options.thumbnail_format, then retry.",
        )
    outputs = [
        Output(ctx.output_dir / "landscape.mp4", Fraction(16, 9), _size(ctx, "landscape_size")),
        Output(ctx.output_dir / "portrait.mp4", Fraction(9, 16), _size(ctx, "portrait_size")),
    ]
    enc = encoding(ctx)
    # The variants come from the source range the cut was made from, not from the cut: one
    # generation of compression, and the same frames as clip.mp4 (same range, same selection).
    source = _source(ctx, clip["source"])
    start, end = float(clip["start"]), float(clip["end"])
    at = option(ctx, "thumbnail_at", 0.5, float)
    info = transcode(
        source,
        start,
        end,
        outputs,
        ctx,
        enc,
        thumbnail_at=float(clip["duration"]) * min(max(at, 0.0), 1.0),
        what="rendering",
    )
    thumb_time, thumb_frame = info["thumbnail"]
    encode_image(thumb_frame, ctx.output_dir / thumb_name)
    cues = clip_segments(segments, start, end)
    (ctx.output_dir / "captions.srt").write_text(to_srt(cues), encoding="utf-8")
    write_json(
        ctx.output_dir / "render.json",
        {
            "title": ctx.item.title,
            "start": clip["start"],
            "end": clip["end"],
            "source": str(source),
            "duration": info["duration"],
            "frames": info["frames"],
            "landscape": {"file": "landscape.mp4", "size": info["sizes"][0]},
            "portrait": {"file": "portrait.mp4", "size": info["sizes"][1]},
            "captions": "captions.srt",
            "cues": len(cues),
            "thumbnail": thumb_name,
            "thumbnail_time": round(thumb_time, 6),
        },
    )
    ctx.progress(1.0, "variants written")
