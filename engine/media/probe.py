"""Episode stage `discovered`: probe the source with PyAV and refuse corrupt files.

Opening a file only reads its header, which a file cut short mid-copy can
still have; so the probe also demuxes every packet (cheap: no decoding) and
decodes the first video frame. A file whose packets end well before its
declared duration is truncated.
"""

from __future__ import annotations

from pathlib import Path

import av

from .. import errors
from ..errors import StageError
from ..stages import StageContext
from .common import option, write_json


def corrupt(path: str | Path, why: str) -> StageError:
    return StageError(
        errors.PERSISTENT,
        f"corrupt source: {path}: {why}",
        suggestion="Replace the source file with a complete, readable copy, then force reprocess; "
        "or skip the episode.",
    )


def ffmpeg_reason(exc: Exception) -> str:
    """FFmpeg's own words without the file name it repeats (the message already names the file)."""
    return getattr(exc, "strerror", None) or str(exc)


def _num(value) -> float | None:
    return None if value is None else round(float(value), 6)


def probe_file(path: Path, ctx: StageContext | None = None, full: bool = True) -> dict:
    """Duration, format and streams of a media file; raises StageError(PERSISTENT) when it is unreadable."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise StageError(
            errors.PERSISTENT,
            f"source file {path} does not exist",
            suggestion="Restore the file or remove the episode, then retry.",
        ) from None
    if st.st_size == 0:
        raise corrupt(path, "the file is empty (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        raise corrupt(path, f"cannot be opened: {ffmpeg_reason(exc)}") from None
    with container:
        streams = []
        for s in container.streams:
            info = {
                "index": s.index,
                "type": s.type,
                "codec": s.codec_context.name if s.codec_context else None,
                "duration": _num(s.duration * s.time_base)
                if s.duration is not None and s.time_base
                else None,
            }
            if s.type == "video":
                rate = s.average_rate or s.guessed_rate
                info.update(
                    width=s.codec_context.width,
                    height=s.codec_context.height,
                    fps=_num(rate) if rate else None,
                    frames=s.frames or None,
                )
            elif s.type == "audio":
                info.update(sample_rate=s.codec_context.sample_rate, channels=s.codec_context.channels)
            streams.append(info)
        media = [s for s in container.streams if s.type in ("video", "audio")]
        if not media:
            raise corrupt(path, "it has no audio or video stream")
        declared = container.duration / av.time_base if container.duration else None
        reached = _scan_packets(container, path, declared, ctx) if full else declared
        if full and declared and reached is not None and reached < declared - max(0.5, 0.02 * declared):
            raise corrupt(
                path, f"truncated: media data ends at {reached:.2f} s of a declared {declared:.2f} s"
            )
        duration = declared if declared else reached
        if not duration:
            raise corrupt(path, "its duration cannot be determined")
        return {
            "format": container.format.name,
            "duration": round(duration, 6),
            "bit_rate": container.bit_rate,
            "size": st.st_size,
            "streams": streams,
            "has_video": any(s["type"] == "video" for s in streams),
            "has_audio": any(s["type"] == "audio" for s in streams),
        }


def _scan_packets(container, path: Path, declared: float | None, ctx: StageContext | None) -> float | None:
    """Demux everything (no decode) and decode the first video frame; returns where the data ends (s)."""
    end = None
    decoded_video = False
    video = container.streams.video[0] if container.streams.video else None
    try:
        for n, packet in enumerate(container.demux()):
            if packet.pts is not None and packet.time_base:
                t = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                end = t if end is None else max(end, t)
            if video is not None and not decoded_video and packet.stream is video and packet.size:
                decoded_video = bool(packet.decode()) or decoded_video
            if ctx is not None and n % 500 == 0:
                ctx.cancel.check()
                if declared and end:
                    ctx.progress(min(0.99, end / declared), f"probing {end:.0f}/{declared:.0f} s")
        if video is not None and not decoded_video:
            for _ in video.codec_context.decode(None):  # flush: short files may hold frames back
                decoded_video = True
    except av.error.FFmpegError as exc:
        raise corrupt(path, f"reading failed at {end or 0:.2f} s: {ffmpeg_reason(exc)}") from None
    if video is not None and not decoded_video:
        raise corrupt(path, "no video frame could be decoded")
    return end


def run_discovered(ctx: StageContext) -> None:
    """Write probe.json for the episode's source, or fail as corrupt source."""
    source = Path(ctx.item.source)
    ctx.progress(0.0, f"probing {source.name}")
    info = probe_file(source, ctx, full=option(ctx, "full_scan", True, bool))
    st = source.stat()
    info.update(
        source=str(source), mtime=st.st_mtime, item=ctx.item.id, show=ctx.item.show, title=ctx.item.title
    )
    write_json(ctx.output_dir / "probe.json", info)
    ctx.logger.info("probed %s: %.2f s, %d streams", source, info["duration"], len(info["streams"]))
    ctx.progress(1.0, "probed")
