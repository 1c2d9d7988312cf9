"""Episode stage `transcribed`: timestamped segments from the best available source.

In order: a caption file next to the video (`<name>.srt`, `<name>.vtt`, or a
language variant such as `<name>.en.srt`); faster-whisper, when it is
installed and `options.whisper_model` is set; `options.command`, a site's own
program; otherwise the stage fails as missing_dependency and says what to do.
Output: segments.json (`{"source": ..., "segments": [{start, end, text}]}`)
and transcript.txt.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

from .. import errors
from ..errors import StageError
from ..stages import StageContext, command
from .captions import CaptionError, parse_captions, read_caption_file
from .common import option, read_input, write_json

CAPTION_SUFFIXES = (".srt", ".vtt")


def find_captions(source: Path) -> Path | None:
    """`<stem>.srt`, then `<stem>.vtt`, then `<stem>.<lang>.srt|vtt` in name order."""
    for suffix in CAPTION_SUFFIXES:
        exact = source.with_suffix(suffix)
        if exact.is_file():
            return exact
    if source.parent.is_dir():
        variants = sorted(
            p
            for p in source.parent.iterdir()
            if p.suffix.lower() in CAPTION_SUFFIXES
            and p.stem.rsplit(".", 1)[0] == source.stem
            and p.is_file()
        )
        if variants:
            return variants[0]
    return None


def whisper_available() -> bool:
    return importlib.util.find_spec("faster_whisper") is not None


def _from_whisper(ctx: StageContext, source: Path, model_name: str, duration: float) -> list[dict]:
    from faster_whisper import WhisperModel  # optional: only imported when configured

    device = option(ctx, "whisper_device", "cpu", str)
    compute_type = option(ctx, "whisper_compute_type", "int8", str)
    ctx.progress(0.0, f"loading Whisper model {model_name}")
    try:
        model = WhisperModel(model_name, device=device, compute_type=compute_type)
    except Exception as exc:  # noqa: BLE001 - the library raises many kinds; all mean "model unusable"
        raise StageError(
            errors.CONFIG_ERROR,
            f"the Whisper model {model_name!r} cannot be loaded: {exc}",
            suggestion="Set options.whisper_model to a downloaded model folder or a model size "
            "(tiny, base, small, ...), then retry.",
        ) from None
    pieces, _info = model.transcribe(
        str(source), language=option(ctx, "language", None, str), beam_size=1, temperature=0.0
    )
    segments = []
    for piece in pieces:  # a generator: transcription happens as we iterate, so cancel works per segment
        ctx.cancel.check()
        text = piece.text.strip()
        if text:
            segments.append({"start": round(piece.start, 3), "end": round(piece.end, 3), "text": text})
        if duration:
            ctx.progress(min(0.99, piece.end / duration), f"transcribed {piece.end:.0f}/{duration:.0f} s")
    return segments


def _from_command(ctx: StageContext, argv: list[str]) -> tuple[list[dict], str]:
    """Run the site's program (same rules as a command stage) and read what it wrote into output_dir."""
    sub = dataclasses.replace(ctx, stage_config=ctx.stage_config.model_copy(update={"command": argv}))
    command.run(sub)
    produced = ctx.output_dir / "segments.json"
    if produced.is_file():
        try:
            data = json.loads(produced.read_text(encoding="utf-8"))
            segments = data["segments"] if isinstance(data, dict) else data
            return [
                {
                    "start": round(float(s["start"]), 3),
                    "end": round(float(s["end"]), 3),
                    "text": str(s["text"]).strip(),
                }
                for s in segments
                if str(s["text"]).strip()
            ], "segments.json"
        except (ValueError, KeyError, TypeError) as exc:
            raise StageError(
                errors.PERSISTENT,
                f"the transcription command wrote a segments.json that is not "
                f"a list of {{start, end, text}}: {exc}",
            ) from None
    for name in ("transcript.srt", "transcript.vtt"):
        path = ctx.output_dir / name
        if path.is_file():
            segments = parse_captions(path.read_text(encoding="utf-8", errors="replace"))
            path.unlink()  # normalised into segments.json below
            return segments, name
    raise StageError(
        errors.CONFIG_ERROR,
        f"the transcription command {argv[0]!r} succeeded but wrote neither "
        f"segments.json nor transcript.srt/.vtt into {ctx.output_dir}",
        suggestion="Make the command write {output_dir}/segments.json or {output_dir}/transcript.srt.",
    )


def run_transcribed(ctx: StageContext) -> None:
    source = Path(ctx.item.source)
    probe = read_input(ctx, "discovered", "probe.json")
    duration = float(probe.get("duration") or 0.0)
    model_name = option(ctx, "whisper_model", None, str)
    argv = option(ctx, "command", None, list)
    captions = find_captions(source) if option(ctx, "use_captions", True, bool) else None
    ctx.cancel.check()
    if captions is not None:
        ctx.progress(0.1, f"reading {captions.name}")
        try:
            segments = read_caption_file(captions)
        except CaptionError as exc:
            raise StageError(
                errors.PERSISTENT,
                f"caption file is unusable: {exc}",
                suggestion="Fix or delete the caption file, then force reprocess.",
            ) from None
        origin = {"source": "captions", "file": str(captions)}
    elif model_name and whisper_available():
        segments = _from_whisper(ctx, source, model_name, duration)
        origin = {"source": "faster-whisper", "model": model_name}
    elif argv:
        segments, produced = _from_command(ctx, [str(a) for a in argv])
        origin = {"source": "command", "program": str(argv[0]), "file": produced}
    else:
        missing = (
            "options.whisper_model is set but faster-whisper is not installed"
            if model_name
            else "faster-whisper is not installed"
            if not whisper_available()
            else "options.whisper_model is not set"
        )
        raise StageError(
            errors.MISSING_DEPENDENCY,
            f"no transcript source for {source.name}: no caption file ({source.stem}.srt or .vtt) next to it, "
            f"{missing}, and no options.command",
            suggestion=(
                "Do one of: put an .srt/.vtt with the same name next to the video; or "
                "`pip install faster-whisper` and set [stages.episode.transcribed] options.whisper_model = "
                '"small" (or a model folder); or set options.command = ["your-whisper", "{source}", '
                '"{output_dir}"] writing segments.json. Then retry.'
            ),
        )
    if not segments:
        raise StageError(
            errors.PERSISTENT,
            f"the transcript of {source.name} is empty ({origin['source']})",
            suggestion="Check the audio or the caption file, then force reprocess, or skip the stage.",
        )
    write_json(ctx.output_dir / "segments.json", {**origin, "segments": segments})
    text = "\n".join(seg["text"] for seg in segments) + "\n"
    (ctx.output_dir / "transcript.txt").write_text(text, encoding="utf-8")
    ctx.logger.info("%d segments from %s", len(segments), origin["source"])
    ctx.progress(1.0, f"{len(segments)} segments")
