"""The `options` of the built-in stages ([stages.KIND.NAME.options] in ewg.toml), with their defaults.

The media stages (engine/media) read them with `option(ctx, key, default, type)`; this table is what
`ewg init --print-config` shows of them. tests/core/test_cli_conventions.py reads every option() call
in engine/media and fails when a key, a default or a type here differs from the code, so the two
cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import pipeline


@dataclass(frozen=True)
class StageOption:
    key: str
    default: Any  # None: unset (`shown` says what happens then)
    type: type
    help: str
    example: Any = None  # printed (commented out) for an option that is unset by default
    shown: str = ""  # the default in words, where it is not a TOML value (computed or too long)


_ENCODING = (
    StageOption("encoder_threads", 0, int, "encoder, decoder and filter threads (0 = one per core)"),
    StageOption("preset", "veryfast", str, "x264 preset: ultrafast .. veryslow (slower: smaller files)"),
    StageOption("crf", 23, int, "x264 quality: lower is better and larger (18 to 28 is usual)"),
    StageOption(
        "x264_mbtree",
        False,
        bool,
        "x264's macroblock tree: files about a third smaller, but reruns do not reproduce the same bytes",
    ),
)

E, C = pipeline.EPISODE, pipeline.CLIP

BUILTIN_OPTIONS: dict[tuple[str, str], tuple[StageOption, ...]] = {
    (E, "discovered"): (
        StageOption(
            "full_scan",
            True,
            bool,
            "read every packet to find truncated files (false: trust the container's header)",
        ),
    ),
    (E, "transcribed"): (
        StageOption(
            "use_captions",
            True,
            bool,
            "a caption file beside the source (.srt, .vtt) is the transcript; no model runs",
        ),
        StageOption(
            "whisper_model",
            None,
            str,
            "faster-whisper model size or folder (needs `pip install faster-whisper`)",
            example="small",
            shown="no model",
        ),
        StageOption("whisper_device", "cpu", str, "faster-whisper device: cpu or cuda"),
        StageOption("whisper_compute_type", "int8", str, "faster-whisper compute type: int8, float16, ..."),
        StageOption("language", None, str, "the spoken language for whisper", example="en", shown="detected"),
        StageOption(
            "command",
            None,
            list,
            "your own transcriber instead of whisper: it writes segments.json into {output_dir}",
            example=["my-whisper", "{source}", "{output_dir}"],
            shown="none",
        ),
    ),
    (E, "enriched"): (
        StageOption("language", "en", str, "the transcript's language, for keyword extraction (YAKE)"),
        StageOption("keywords", 12, int, "keywords extracted"),
        StageOption("keyword_ngram", 2, int, "the longest keyword, in words"),
        StageOption(
            "topics",
            None,
            dict,
            "topic name -> the phrases that signal it",
            example={"Robotics": ["robot", "robots"]},
            shown="the built-in AI-EWG lexicon (engine/media/enrich.py DEFAULT_TOPICS)",
        ),
        StageOption("max_topics", 5, int, "topics kept"),
        StageOption("summary_sentences", 3, int, "sentences in the extractive summary"),
        StageOption(
            "llm_service",
            None,
            str,
            "a [services.NAME] (Ollama-compatible) that writes the summary; list it in services too",
            example="llm",
            shown="no LLM",
        ),
        StageOption(
            "llm_model", None, str, "the model the service runs (with llm_service)", example="llama3.2"
        ),
        StageOption(
            "llm_timeout",
            None,
            float,
            "seconds one request may take",
            example=120.0,
            shown="[timeouts] api_requests",
        ),
        StageOption("llm_attempts", 3, int, "requests before the stage fails"),
        StageOption("llm_retry_wait", 0.5, float, "the first wait between requests (doubles)"),
        StageOption("llm_max_chars", 12000, int, "transcript characters sent"),
        StageOption(
            "llm_prompt",
            "Summarise this episode transcript in three sentences for a web page. "
            "Answer with the summary only.\n\n{transcript}",
            str,
            "the prompt; {transcript} is replaced by the transcript",
        ),
    ),
    (E, "editorial"): (
        StageOption("min_clip_seconds", 15.0, float, "the shortest clip"),
        StageOption("max_clip_seconds", 60.0, float, "the longest clip"),
        StageOption("max_clips", 3, int, "clips cut from one episode"),
        StageOption("title_max_chars", 80, int, "the longest clip title"),
    ),
    (E, "rendered"): (StageOption("language", "en", str, "the episode page's lang attribute"),),
    (C, "generated"): _ENCODING,
    (C, "rendered"): (
        StageOption(
            "landscape_size",
            None,
            str,
            "the 16:9 variant's size",
            example="1280x720",
            shown="the source's, cropped",
        ),
        StageOption(
            "portrait_size",
            None,
            str,
            "the 9:16 variant's size",
            example="720x1280",
            shown="the source's, cropped",
        ),
        StageOption("thumbnail_format", "png", str, "png or jpg"),
        StageOption("thumbnail_at", 0.5, float, "where the thumbnail is taken, as a fraction of the clip"),
        *_ENCODING,
    ),
}


def options_of(kind: str, stage: str) -> tuple[StageOption, ...]:
    """The built-in stage's options (none for a stage ewg has no built-in for)."""
    return BUILTIN_OPTIONS.get((kind, stage), ())
