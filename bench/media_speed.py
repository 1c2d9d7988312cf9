"""Media speed: ewg's clip stages against the ffmpeg command line making the same files (issue 13).

    .venv/bin/python bench/media_speed.py [SOURCE] [--start S] [--end E] [--threads N] [--repeat 3]

SOURCE is any video with sound; without one, a real-content source is generated once with PyAV
(720p H.264 + AAC, 30 s: two textured layers panning against each other, moving shapes, grain and
a changing tone, so the encoder has real work) and kept in the temp folder for the next run.

In the same run, alternating, `--repeat` times each (medians are printed):

* **ewg**: the built-in clip stages as the engine runs them (in this process, no database):
  `generated` (clip.mp4) then `rendered` (landscape.mp4 16:9, portrait.mp4 9:16, thumbnail,
  captions), both reading [start, end) of the source, at `encoder_threads = N`.
* **ffmpeg, 2 commands**: one command per ewg stage, the same outputs from the same range.
* **ffmpeg, 1 command**: one decode, `split=3`, all three files.
  Both run the filters ewg's graph runs (`engine.media.clips.video_filters`), with libx264 at the
  same preset and CRF, AAC audio, and `-threads N` for decoder, filters and encoders. Without an
  ffmpeg binary, the reference is PyAV's encoders driven directly (one decode, same graph).

Also timed: the probe (`discovered`, a full packet scan) and caption transcription (`transcribed`
from a sidecar SRT), each as seconds per media hour, on an episode of at least 10 minutes made by
stream-copying the source over and over (a 30 s file would time mostly the cost of opening it).
Wall time is what the target (ewg within 1.3x) is about; CPU time is printed beside it because
on a shared machine it moves less than wall time. The load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av  # noqa: E402
import numpy as np  # noqa: E402

import engine.media  # noqa: E402,F401 - registers the built-in stages
from engine.config import Config, StageConfig  # noqa: E402
from engine.media.captions import to_srt  # noqa: E402
from engine.media.clips import Encoding, Output, engine_cores, filter_text, video_filters, x264_params  # noqa: E402
from engine.media.demo_media import speech_segments  # noqa: E402
from engine.stages import CancelToken, Earlier, ItemInfo, LogTail, StageContext  # noqa: E402

PRESET, CRF = "veryfast", 23


# -- the generated source ---------------------------------------------------------------------


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Fractal value noise in colour: detail at every scale, like a photographed surface."""
    img = np.zeros((h, w, 3), np.float32)
    for octave in range(1, 8):
        cells = 2**octave
        small = rng.random((cells + 1, cells * w // h + 1, 3), dtype=np.float32)
        ys = np.linspace(0, cells, h, endpoint=False).astype(np.int32)
        xs = np.linspace(0, cells * w // h, w, endpoint=False).astype(np.int32)
        img += small[ys][:, xs] / octave
    img -= img.min()
    return (img / img.max() * 255).astype(np.uint8)


def make_source(
    path: Path, seconds: float = 30.0, width: int = 1280, height: int = 720, fps: int = 25
) -> None:
    rng = np.random.default_rng(13)
    far = _texture(rng, height * 2, width * 2)
    near = _texture(rng, height * 2, width * 2)
    mask = (_texture(rng, height * 2, width * 2)[..., 0] > 128)[..., None]
    yy, xx = np.mgrid[0:height, 0:width]
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), mode="w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.options = {"preset": "fast", "crf": "21", "g": "250"}
        audio = out.add_stream("aac", rate=48000, layout="stereo")
        frames = int(seconds * fps)
        for i in range(frames):
            t = i / fps
            fx, fy = int(300 + 250 * np.sin(t / 3)), int(200 + 150 * np.sin(t / 5))
            nx, ny = int(600 + 500 * np.cos(t / 2)), int(300 + 250 * np.sin(t / 2.5))
            img = np.where(
                mask[ny : ny + height, nx : nx + width],
                near[ny : ny + height, nx : nx + width],
                far[fy : fy + height, fx : fx + width],
            )
            for k in range(4):  # moving discs
                cx = width * (0.5 + 0.4 * np.sin(t * (0.7 + 0.3 * k) + k))
                cy = height * (0.5 + 0.35 * np.cos(t * (0.5 + 0.2 * k) + 2 * k))
                disc = (xx - cx) ** 2 + (yy - cy) ** 2 < (40 + 15 * k) ** 2
                img[disc] = (60 * k + 40, 200 - 40 * k, 120)
            grain = rng.integers(-2, 3, size=(height, width, 1), dtype=np.int16)
            img = np.clip(img.astype(np.int16) + grain, 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        rate, chunk = 48000, 1024
        total = int(seconds * rate)
        tt = np.arange(total) / rate
        tone = 220 * 2 ** (np.floor(tt * 2) % 12 / 12)  # a note every half second
        wave = 0.2 * np.sin(2 * np.pi * np.cumsum(tone) / rate) + 0.03 * rng.standard_normal(total)
        stereo = np.stack([wave, np.roll(wave, 200)]).astype(np.float32)
        for s in range(0, total, chunk):
            af = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(stereo[:, s : s + chunk]), format="fltp", layout="stereo"
            )
            af.sample_rate, af.pts, af.time_base = rate, s, Fraction(1, rate)
            for packet in audio.encode(af):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
    tmp.rename(path)


def long_copy(source: Path, path: Path, repeats: int) -> None:
    """The source `repeats` times over, stream-copied (no re-encode): a long episode for the probe,
    where a 30 s file would time mostly the fixed costs of opening it."""
    with av.open(str(source)) as inp, av.open(str(path), mode="w", format="mp4") as out:
        streams = {
            s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")
        }
        span: dict[int, list[int]] = {}  # stream -> [first dts, last dts + duration] of one pass
        for n in range(repeats):
            inp.seek(0)
            for packet in inp.demux(*(s for s in inp.streams if s.index in streams)):
                if packet.dts is None:
                    continue
                i = packet.stream_index
                if n == 0:
                    first, last = span.setdefault(i, [packet.dts, packet.dts])
                    span[i][1] = max(last, packet.dts + (packet.duration or 0))
                shift = n * (span[i][1] - span[i][0])
                packet.pts = None if packet.pts is None else packet.pts + shift
                packet.dts += shift
                packet.stream = streams[i]
                out.mux(packet)


# -- running ewg's stages ---------------------------------------------------------------------


def _ctx(
    item: ItemInfo, stage: str, root: Path, inputs: dict, parent: dict | None, options: dict
) -> StageContext:
    out = root / f"{item.id}.{stage}.tmp"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tail = LogTail()
    logger = logging.Logger(f"bench.{stage}")
    logger.addHandler(tail)
    return StageContext(
        item=item,
        stage=stage,
        attempt=1,
        earlier=Earlier(inputs=inputs, parent_inputs=parent),
        output_path=out,
        cache_dir=root / "cache",
        item_dir=root,
        workspace=root,
        stage_config=StageConfig(kind="builtin", options=options, services=[]),
        config=Config(),
        cancel=CancelToken(),
        logger=logger,
        log_tail=tail,
    )


def _publish(ctx: StageContext, root: Path, name: str) -> Path:
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    ctx.output_dir.rename(final)
    return final


def _clock(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of fn(), CPU counting this process's threads and waited-for children."""

    def cpu() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    w0, c0 = time.perf_counter(), cpu()
    fn()
    return time.perf_counter() - w0, cpu() - c0


def _impl(kind: str, stage: str):
    """The stage's own function: the engine runs it in a worker subprocess at `worker_nice`, which
    would time the child's start and its lower priority on a shared machine, not the media work."""
    module, _, name = engine.media.STAGES[(kind, stage)].partition(":")
    return getattr(importlib.import_module(module), name)


def run_episode_stage(source: Path, stage: str, root: Path, inputs: dict) -> tuple[float, float]:
    item = ItemInfo("bench_2026-01-05", "episode", str(source), "Bench", "Bench episode")
    ctx = _ctx(item, stage, root, inputs, None, {})
    spent = _clock(lambda: _impl("episode", stage)(ctx))
    inputs[stage] = _publish(ctx, root, stage)
    return spent


def run_ewg(source: Path, start: float, end: float, threads: int, root: Path, parent: dict) -> dict:
    clip = ItemInfo(
        "bench_2026-01-05__c01", "clip", str(source), "Bench", "Bench clip", "bench_2026-01-05", start, end
    )
    options = {"encoder_threads": threads, "preset": PRESET, "crf": CRF}
    ctx = _ctx(clip, "generated", root, {}, None, options)
    gen = _clock(lambda: _impl("clip", "generated")(ctx))
    generated = _publish(ctx, root, "generated")
    rctx = _ctx(clip, "rendered", root, {"generated": generated}, parent, options)
    ren = _clock(lambda: _impl("clip", "rendered")(rctx))
    rendered = _publish(rctx, root, "rendered")
    return {
        "generated": gen,
        "rendered": ren,
        "files": [generated / "clip.mp4", rendered / "landscape.mp4", rendered / "portrait.mp4"],
    }


# -- the references ---------------------------------------------------------------------------


def _chains(source: Path) -> list[str]:
    with av.open(str(source)) as c:
        w, h = c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height
    outs = [Output(Path("clip")), Output(Path("l"), Fraction(16, 9)), Output(Path("p"), Fraction(9, 16))]
    return [filter_text(video_filters(w, h, o)[0]) for o in outs]


def _ffmpeg_outputs(labels: list[str], files: list[Path], threads: int) -> list[str]:
    args = []
    for label, f in zip(labels, files):
        args += ["-map", f"[{label}]", "-map", "0:a?", "-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF)]
        for key, value in x264_params(Encoding(threads, PRESET, CRF)).items():  # the stages' own settings
            args += [f"-{key}", value]
        args += ["-threads", str(threads), "-c:a", "aac", "-y", str(f)]
    return args


def ffmpeg_commands(
    source: Path, start: float, end: float, threads: int, folder: Path, one: bool
) -> list[list[str]]:
    """The ffmpeg command lines that make clip.mp4, landscape.mp4 and portrait.mp4 from [start, end)."""
    chains = _chains(source)
    files = [folder / "clip.mp4", folder / "landscape.mp4", folder / "portrait.mp4"]
    head = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-threads", str(threads)]
    head += [
        "-ss",
        f"{start}",
        "-t",
        f"{end - start}",
        "-i",
        str(source),
        "-filter_complex_threads",
        str(threads),
    ]
    if one:
        graph = f"[0:v]split=3[s0][s1][s2];[s0]{chains[0]}[o0];[s1]{chains[1]}[o1];[s2]{chains[2]}[o2]"
        return [head + ["-filter_complex", graph] + _ffmpeg_outputs(["o0", "o1", "o2"], files, threads)]
    cut = head + ["-filter_complex", f"[0:v]{chains[0]}[o0]"] + _ffmpeg_outputs(["o0"], files[:1], threads)
    graph = f"[0:v]split=2[s1][s2];[s1]{chains[1]}[o1];[s2]{chains[2]}[o2]"
    variants = head + ["-filter_complex", graph] + _ffmpeg_outputs(["o1", "o2"], files[1:], threads)
    return [cut, variants]


def run_ffmpeg(cmds: list[list[str]]) -> tuple[float, float]:
    def go() -> None:
        for cmd in cmds:
            subprocess.run(cmd, check=True)

    return _clock(go)


def run_pyav_reference(
    source: Path, start: float, end: float, threads: int, folder: Path
) -> tuple[float, float]:
    """Without ffmpeg: PyAV's encoders driven directly, one decode, split=3, no engine around it."""
    from engine.media.clips import transcode

    class _Quiet:
        cancel = CancelToken()

        def progress(self, *_a) -> None:
            pass

    outs = [
        Output(folder / "clip.mp4"),
        Output(folder / "landscape.mp4", Fraction(16, 9)),
        Output(folder / "portrait.mp4", Fraction(9, 16)),
    ]
    return _clock(lambda: transcode(source, start, end, outs, _Quiet(), Encoding(threads, PRESET, CRF)))


# -- checking that both made the same things --------------------------------------------------


def facts(path: Path) -> str:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.demux(v) if _.size)
        a = c.streams.audio[0].duration * c.streams.audio[0].time_base if c.streams.audio else 0
        return f"{v.codec_context.width}x{v.codec_context.height} {n} fr, audio {float(a):.2f} s, {path.stat().st_size / 1e6:.2f} MB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", nargs="?", help="a video with sound (default: a generated 720p source)")
    ap.add_argument("--start", type=float, help="clip start in seconds (default: 15%% in, off a keyframe)")
    ap.add_argument(
        "--end", type=float, help="clip end in seconds (default: start + 65%% of the source, at most 60 s)"
    )
    ap.add_argument(
        "--threads", type=int, default=0, help="encoder threads for both (0: one per core ewg may use)"
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()
    threads = args.threads or engine_cores()
    work = Path(tempfile.mkdtemp(prefix="ewg-media-speed-"))
    try:
        if args.source:
            given = Path(args.source)
            if not given.is_file():
                print(
                    f"media_speed: {given} is not a file; pass a video with sound, or nothing to generate one",
                    file=sys.stderr,
                )
                return 2
            original = given.resolve()
        else:
            original = Path(tempfile.gettempdir()) / "ewg-media-speed-source-720p30s.mp4"
            if not original.exists():
                print(f"generating {original} (720p H.264 + AAC, 30 s) ...", flush=True)
                make_source(original)
        source = work / "clips" / ("episode" + original.suffix)
        source.parent.mkdir()
        source.symlink_to(original)
        with av.open(str(source)) as c:
            duration = c.duration / av.time_base
        # The probe and the captions run on an episode of at least 10 minutes (the source over
        # and over, stream-copied) with a caption file for its whole length.
        episode = work / "episode" / "episode.mp4"
        episode.parent.mkdir()
        long_copy(source, episode, max(1, math.ceil(600 / duration)))
        with av.open(str(episode)) as c:
            episode_duration = c.duration / av.time_base
        captions = speech_segments(episode_duration, random.Random(1), cue=2.5)
        episode.with_suffix(".srt").write_text(to_srt(captions))
        start = args.start if args.start is not None else round(duration * 0.15, 2) + 0.13
        end = args.end if args.end is not None else min(duration, start + min(60.0, duration * 0.65))
        if not 0 <= start < end <= duration + 0.01:
            print(
                f"media_speed: the range {start}-{end} s is not inside the source (0-{duration:.2f} s)",
                file=sys.stderr,
            )
            return 2
        have_ffmpeg = shutil.which("ffmpeg") is not None
        root = work / "items"
        root.mkdir()
        parent: dict[str, Path] = {}
        probe = run_episode_stage(episode, "discovered", root, parent)
        transcribed = run_episode_stage(episode, "transcribed", root, parent)
        rows: dict[str, list[tuple[float, float]]] = {
            k: [] for k in ("generated", "rendered", "ewg", "ff2", "ff1")
        }
        ref_dir = work / "reference"
        ref_dir.mkdir()
        for n in range(args.repeat):
            load0 = os.getloadavg()[0]
            ewg = run_ewg(source, start, end, threads, root, parent)
            if have_ffmpeg:
                ff2 = run_ffmpeg(ffmpeg_commands(source, start, end, threads, ref_dir, one=False))
                ff1 = run_ffmpeg(ffmpeg_commands(source, start, end, threads, ref_dir, one=True))
            else:
                ff2 = ff1 = run_pyav_reference(source, start, end, threads, ref_dir)
            rows["generated"].append(ewg["generated"])
            rows["rendered"].append(ewg["rendered"])
            rows["ewg"].append(tuple(a + b for a, b in zip(ewg["generated"], ewg["rendered"])))
            rows["ff2"].append(ff2)
            rows["ff1"].append(ff1)
            print(
                f"run {n + 1}: ewg {rows['ewg'][-1][0]:.2f} s, ffmpeg 2 cmds {ff2[0]:.2f} s, 1 cmd {ff1[0]:.2f} s"
                f" (load {load0:.2f} -> {os.getloadavg()[0]:.2f})",
                flush=True,
            )

        def med(key: str, i: int) -> float:
            return statistics.median(r[i] for r in rows[key])

        ff_version = (
            subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
            if have_ffmpeg
            else ""
        )
        print()
        print(f"source: {original.name}  {facts(source)}  ({duration:.1f} s)")
        print(
            f"clip: {start:.2f}-{end:.2f} s ({end - start:.2f} s), threads {threads}, libx264 {PRESET} crf {CRF}"
        )
        print(f"PyAV {av.__version__} (FFmpeg {getattr(av, 'ffmpeg_version_info', '?')}); {ff_version}")
        print(
            f"load average (1/5/15 min) at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores"
        )
        print(f"median of {args.repeat}        wall s   CPU s   wall ratio")
        print(f"  ewg generated        {med('generated', 0):7.2f} {med('generated', 1):7.2f}")
        print(f"  ewg rendered         {med('rendered', 0):7.2f} {med('rendered', 1):7.2f}")
        print(f"  ewg both stages      {med('ewg', 0):7.2f} {med('ewg', 1):7.2f}")
        references = [("ff2", "ffmpeg, 2 commands"), ("ff1", "ffmpeg, 1 command")]
        if not have_ffmpeg:
            references = [("ff1", "PyAV, 1 decode")]  # no ffmpeg binary: PyAV's encoders, split=3
        for key, label in references:
            print(
                f"  {label:20} {med(key, 0):7.2f} {med(key, 1):7.2f}"
                f"   ewg {med('ewg', 0) / med(key, 0):.2f}x (CPU {med('ewg', 1) / med(key, 1):.2f}x)"
            )
        hour = 3600 / episode_duration
        print(
            f"probe (discovered, full packet scan): {probe[0] * hour:.2f} s per media hour"
            f" ({probe[0]:.3f} s for {episode_duration / 60:.1f} min)"
        )
        print(
            f"captions (transcribed, {len(captions)} cues from an SRT): {transcribed[0] * hour:.2f} s per media hour"
            f" ({transcribed[0]:.3f} s)"
        )
        print("outputs (ewg | reference):")
        for mine, theirs in zip(
            run_ewg_files(root), [ref_dir / "clip.mp4", ref_dir / "landscape.mp4", ref_dir / "portrait.mp4"]
        ):
            print(f"  {mine.name:14} {facts(mine)} | {facts(theirs)}")
        if args.json:
            print(json.dumps({k: v for k, v in rows.items()}))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_ewg_files(root: Path) -> list[Path]:
    return [
        root / "generated" / "clip.mp4",
        root / "rendered" / "landscape.mp4",
        root / "rendered" / "portrait.mp4",
    ]


if __name__ == "__main__":
    sys.exit(main())
