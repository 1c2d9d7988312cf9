"""Each built-in stage on generated media: valid outputs, idempotency, error classes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import av
import pytest
from media_helpers import EDITORIAL, by_expectation, episode_item, make_ctx, run_stage

import engine.media
from engine import errors, stages
from engine.config import StageConfig
from engine.errors import Cancelled, StageError
from engine.stages import ItemInfo


def test_importing_the_package_registers_all_seven_stages():
    expected = {("episode", s) for s in ("discovered", "transcribed", "enriched", "editorial", "rendered")}
    expected |= {("clip", "generated"), ("clip", "rendered")}
    assert set(engine.media.STAGES) == expected
    for key, target in engine.media.STAGES.items():
        assert stages.BUILTIN[key] == target
        assert callable(stages.resolve(key[0], key[1], StageConfig(kind="builtin")))


def test_probe_records_duration_and_streams(processed):
    probe = json.loads((processed["checkpoints"]["discovered"] / "probe.json").read_text())
    assert probe["duration"] == pytest.approx(4.0, abs=0.05)
    kinds = {s["type"]: s for s in probe["streams"]}
    assert kinds["video"]["width"] == 160 and kinds["video"]["height"] == 90
    assert kinds["audio"]["sample_rate"] == 22050


def test_transcript_comes_from_the_caption_file(processed):
    data = json.loads((processed["checkpoints"]["transcribed"] / "segments.json").read_text())
    assert data["source"] == "captions"
    assert data["segments"] and all(s["end"] > s["start"] for s in data["segments"])
    text = (processed["checkpoints"]["transcribed"] / "transcript.txt").read_text()
    assert data["segments"][0]["text"] in text


def test_enrichment_has_keywords_topics_and_a_summary_from_the_transcript(processed):
    enrichment = json.loads((processed["checkpoints"]["enriched"] / "enrichment.json").read_text())
    transcript = (processed["checkpoints"]["transcribed"] / "transcript.txt").read_text().lower()
    assert len(enrichment["keywords"]) >= 5
    assert all(kw["phrase"].lower() in transcript for kw in enrichment["keywords"])
    assert enrichment["topics"]
    assert enrichment["summary_sentences"] and all(
        s.lower() in transcript for s in enrichment["summary_sentences"]
    )
    assert enrichment["llm"] is None


def test_editorial_creates_clips_within_the_length_bounds(processed):
    clips = processed["contexts"]["editorial"].clips
    assert [c.key for c in clips] == ["c01", "c02"][: len(clips)] and clips
    for clip in clips:
        assert EDITORIAL["min_clip_seconds"] <= clip.end - clip.start <= EDITORIAL["max_clip_seconds"]
        assert 0 <= clip.start < clip.end <= 4.0
        assert clip.title
    ordered = sorted(clips, key=lambda c: c.start)
    assert all(a.end <= b.start for a, b in zip(ordered, ordered[1:])), "clips must not overlap"


def test_episode_page_contains_transcript_summary_keywords_and_clips(processed):
    html = (processed["checkpoints"]["rendered"] / "index.html").read_text()
    segments = json.loads((processed["checkpoints"]["transcribed"] / "segments.json").read_text())["segments"]
    enrichment = json.loads((processed["checkpoints"]["enriched"] / "enrichment.json").read_text())
    item = processed["item"]
    assert f"<h1>{item.title}</h1>" in html and item.show in html and "2026-01-" in html
    for seg in segments:
        assert seg["text"] in html
    assert "0:00:01" in html  # timestamps in the transcript
    assert enrichment["keywords"][0]["phrase"] in html
    assert enrichment["summary_sentences"][0] in html
    for clip in processed["contexts"]["editorial"].clips:
        assert f'id="clip-{clip.key}"' in html
    assert 'id="search"' in html and "<style>" in html and "<script>" in html
    assert "http://" not in html and "https://" not in html, "the page must be self-contained"
    meta = json.loads((processed["checkpoints"]["rendered"] / "metadata.json").read_text())
    assert meta["id"] == item.id and meta["date"] == item.id.rsplit("_", 1)[1]
    assert [c["key"] for c in meta["clips"]] == [c.key for c in processed["contexts"]["editorial"].clips]


def _video_duration(path: Path) -> tuple[float, int, int, int]:
    with av.open(str(path)) as container:
        v = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        return float(v.duration * v.time_base), frames, v.codec_context.width, v.codec_context.height


def test_generated_clips_open_and_last_their_range_within_a_frame(processed):
    for clip, checkpoints in processed["clips"].values():
        duration, frames, width, height = _video_duration(checkpoints["generated"] / "clip.mp4")
        assert abs(duration - (clip.clip_end - clip.clip_start)) <= 1 / 25 + 1e-6
        assert frames == round(duration * 25)
        assert (width, height) == (160, 90)
        with av.open(str(checkpoints["generated"] / "clip.mp4")) as container:
            assert container.streams.audio, "the clip keeps its sound"


def test_rendered_clip_variants_captions_and_thumbnail(processed):
    segments = json.loads((processed["checkpoints"]["transcribed"] / "segments.json").read_text())["segments"]
    for clip, checkpoints in processed["clips"].values():
        out = checkpoints["rendered"]
        span = clip.clip_end - clip.clip_start
        d16, _, w16, h16 = _video_duration(out / "landscape.mp4")
        d9, _, w9, h9 = _video_duration(out / "portrait.mp4")
        assert abs(w16 / h16 - 16 / 9) < 0.05 and abs(w9 / h9 - 9 / 16) < 0.05
        assert abs(d16 - span) <= 1 / 25 + 1e-6 and abs(d9 - span) <= 1 / 25 + 1e-6
        srt = (out / "captions.srt").read_text()
        assert srt.startswith("1\n00:00:00,000 --> ")
        inside = [s for s in segments if s["start"] < clip.clip_end and s["end"] > clip.clip_start]
        assert inside and all(s["text"] in srt for s in inside)
        assert (out / "thumbnail.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_jpeg_thumbnail_and_scaled_variants(processed, tmp_path):
    clip, checkpoints = next(iter(processed["clips"].values()))
    inputs = {"generated": checkpoints["generated"]}
    ctx = make_ctx(
        clip,
        "rendered",
        tmp_path,
        inputs=inputs,
        parent_inputs=processed["checkpoints"],
        options={"thumbnail_format": "jpg", "landscape_size": "320x180", "portrait_size": "90x160"},
    )
    stages.resolve("clip", "rendered", ctx.stage_config)(ctx)
    assert (ctx.output_dir / "thumbnail.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert _video_duration(ctx.output_dir / "landscape.mp4")[2:] == (320, 180)
    assert _video_duration(ctx.output_dir / "portrait.mp4")[2:] == (90, 160)


def _video_facts(path: Path) -> tuple:
    """What a rerun must reproduce of an encoded video: streams, sizes, frame counts, durations.
    (Byte-identical reruns at a fixed encoder thread count are checked in test_clips.py.)"""
    with av.open(str(path)) as container:
        facts = []
        for stream in container.streams:
            frames = sum(1 for _ in container.decode(stream))
            container.seek(0)
            duration = float(stream.duration * stream.time_base) if stream.duration else None
            facts.append(
                (
                    stream.type,
                    stream.codec_context.name,
                    getattr(stream.codec_context, "width", None),
                    getattr(stream.codec_context, "height", None),
                    frames,
                    None if duration is None else round(duration, 2),
                )
            )
        return tuple(facts)


def _tree(folder: Path) -> dict[str, object]:
    return {
        p.relative_to(folder).as_posix(): _video_facts(p) if p.suffix == ".mp4" else p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_every_stage_is_idempotent(processed, tmp_path):
    """Running each stage again on the same inputs gives the same outputs (byte-identical, and for MP4s the
    same streams, frames and durations) and the same clips."""
    item = processed["item"]
    episode_checkpoints = processed["checkpoints"]
    for stage, first in episode_checkpoints.items():
        inputs = {s: p for s, p in episode_checkpoints.items() if s != stage}
        again = run_stage(
            item, stage, tmp_path, dict(inputs), options=EDITORIAL if stage == "editorial" else None
        )
        assert _tree(tmp_path / item.id / stage) == _tree(first), stage
        if stage == "editorial":
            assert again.clips == processed["contexts"]["editorial"].clips
    for clip, checkpoints in processed["clips"].values():
        fresh: dict[str, Path] = {}
        run_stage(clip, "generated", tmp_path, fresh)
        run_stage(clip, "rendered", tmp_path, fresh, parent_inputs=episode_checkpoints)
        for stage in ("generated", "rendered"):
            assert _tree(fresh[stage]) == _tree(checkpoints[stage]), f"{clip.id} {stage}"


def test_editorial_rerun_on_the_same_context_does_not_duplicate_clips(processed, tmp_path):
    checkpoints = {s: p for s, p in processed["checkpoints"].items() if s != "editorial"}
    ctx = make_ctx(processed["item"], "editorial", tmp_path, inputs=checkpoints, options=EDITORIAL)
    impl = stages.resolve("episode", "editorial", ctx.stage_config)
    impl(ctx)
    impl(ctx)
    keys = [c.key for c in ctx.clips]
    assert len(keys) == len(set(keys)) == len(processed["contexts"]["editorial"].clips)


@pytest.mark.parametrize("expectation", ["corrupt source"])
def test_corrupt_sources_fail_persistent_naming_the_file(demo_media, tmp_path, expectation):
    bad = [d for d in demo_media["items"] if d["expectation"] == expectation]
    assert len(bad) == 2  # the truncated upload and the zero-byte file
    for entry in bad:
        with pytest.raises(StageError) as info:
            run_stage(episode_item(entry), "discovered", tmp_path, {})
        assert info.value.error_class == errors.PERSISTENT
        assert info.value.message.startswith(f"corrupt source: {entry['source']}: ")
        assert errors.classify(info.value).error_class == errors.PERSISTENT


def test_zero_byte_and_truncated_messages_say_what_is_wrong(demo_media, tmp_path):
    empty = next(d for d in demo_media["items"] if "Empty" in d["source"])
    truncated = next(d for d in demo_media["items"] if "Truncated" in d["source"])
    with pytest.raises(StageError, match=r"empty \(0 bytes\)"):
        run_stage(episode_item(empty), "discovered", tmp_path, {})
    with pytest.raises(StageError, match="cannot be opened: Invalid data"):
        run_stage(episode_item(truncated), "discovered", tmp_path, {})


def test_truncated_file_with_index_at_the_front_is_caught_by_the_packet_scan(demo_media, tmp_path):
    """A 'faststart' MP4 cut short still opens (its index is at the front); the packet scan notices."""
    good = Path(by_expectation(demo_media, "ok")["source"])
    remuxed = tmp_path / "faststart.mp4"
    with av.open(str(good)) as inp, av.open(str(remuxed), "w", options={"movflags": "faststart"}) as out:
        mapping = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is not None:
                packet.stream = mapping[packet.stream.index]
                out.mux(packet)
    data = remuxed.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    item = ItemInfo("show_ep001_2026-01-01", "episode", str(cut), "show", "cut")
    with pytest.raises(StageError) as info:
        run_stage(item, "discovered", tmp_path, {})
    assert info.value.error_class == errors.PERSISTENT
    assert "corrupt source" in info.value.message and str(cut) in info.value.message


def test_missing_source_file_is_persistent(tmp_path):
    item = ItemInfo("show_ep001_2026-01-01", "episode", str(tmp_path / "gone.mp4"), "show", "gone")
    with pytest.raises(StageError, match="does not exist") as info:
        run_stage(item, "discovered", tmp_path, {})
    assert info.value.error_class == errors.PERSISTENT


def _discovered(entry: dict, tmp_path: Path) -> dict[str, Path]:
    checkpoints: dict[str, Path] = {}
    run_stage(episode_item(entry), "discovered", tmp_path, checkpoints)
    return checkpoints


def test_no_captions_and_no_whisper_is_a_missing_dependency_that_says_what_to_do(
    demo_media, tmp_path, monkeypatch
):
    from engine.media import transcribe

    monkeypatch.setattr(transcribe, "whisper_available", lambda: False)
    entry = by_expectation(demo_media, "missing dependency")
    checkpoints = _discovered(entry, tmp_path)
    with pytest.raises(StageError) as info:
        run_stage(episode_item(entry), "transcribed", tmp_path, checkpoints)
    exc = info.value
    assert exc.error_class == errors.MISSING_DEPENDENCY
    assert "no caption file" in exc.message and "faster-whisper is not installed" in exc.message
    assert "pip install faster-whisper" in exc.suggestion and "options.whisper_model" in exc.suggestion
    assert "options.command" in exc.suggestion
    with pytest.raises(StageError, match="whisper_model is set but faster-whisper is not installed"):
        run_stage(
            episode_item(entry), "transcribed", tmp_path, checkpoints, options={"whisper_model": "tiny"}
        )


def test_transcription_command_is_used_when_there_are_no_captions(demo_media, tmp_path, monkeypatch):
    from engine.media import transcribe

    monkeypatch.setattr(transcribe, "whisper_available", lambda: False)
    entry = by_expectation(demo_media, "missing dependency")
    checkpoints = _discovered(entry, tmp_path)
    script = tmp_path / "fake_whisper.py"
    script.write_text(
        "import sys, pathlib\n"
        "print('progress: 0.5 listening')\n"
        "pathlib.Path(sys.argv[2], 'transcript.srt').write_text("
        "'1\\n00:00:00,000 --> 00:00:02,000\\nhello from the site script\\n')\n"
    )
    import sys

    run_stage(
        episode_item(entry),
        "transcribed",
        tmp_path,
        checkpoints,
        options={"command": [sys.executable, str(script), "{source}", "{output_dir}"]},
    )
    data = json.loads((checkpoints["transcribed"] / "segments.json").read_text())
    assert data["source"] == "command"
    assert data["segments"] == [{"start": 0.0, "end": 2.0, "text": "hello from the site script"}]
    assert not (checkpoints["transcribed"] / "transcript.srt").exists()


def test_failing_transcription_command_keeps_its_exit_code_class(demo_media, tmp_path, monkeypatch):
    from engine.media import transcribe

    monkeypatch.setattr(transcribe, "whisper_available", lambda: False)
    entry = by_expectation(demo_media, "missing dependency")
    checkpoints = _discovered(entry, tmp_path)
    import sys

    with pytest.raises(StageError) as info:
        run_stage(
            episode_item(entry),
            "transcribed",
            tmp_path,
            checkpoints,
            options={"command": [sys.executable, "-c", "import sys; sys.exit(75)"]},
        )
    assert info.value.error_class == errors.TRANSIENT


def test_vtt_captions_are_read(demo_media, tmp_path):
    entry = dict(by_expectation(demo_media, "missing dependency"))
    video = tmp_path / "talk" / "Episode 009.mp4"
    video.parent.mkdir()
    shutil.copy(entry["source"], video)
    (video.parent / "Episode 009.en.vtt").write_text(
        "WEBVTT\n\n00:00.500 --> 00:01.750 align:start\n<v Host>Welcome to the <b>show</b>\n\n"
        "00:02.000 --> 00:03.000\nSecond line\n"
    )
    entry["source"] = str(video)
    checkpoints = _discovered(entry, tmp_path)
    run_stage(episode_item(entry), "transcribed", tmp_path, checkpoints)
    data = json.loads((checkpoints["transcribed"] / "segments.json").read_text())
    assert data["segments"] == [
        {"start": 0.5, "end": 1.75, "text": "Welcome to the show"},
        {"start": 2.0, "end": 3.0, "text": "Second line"},
    ]


def test_clip_generation_stops_at_its_cancel_token(processed, tmp_path):
    clip, _ = next(iter(processed["clips"].values()))
    ctx = make_ctx(clip, "generated", tmp_path)
    ctx.cancel.cancel("stop")
    with pytest.raises(Cancelled):
        stages.resolve("clip", "generated", ctx.stage_config)(ctx)


def test_stages_report_progress(processed, tmp_path):
    clip, _ = next(iter(processed["clips"].values()))
    seen: list = []
    run_stage(clip, "generated", tmp_path, {}, progress=seen)
    assert seen[0][0] == 0.0 and seen[-1][0] == 1.0
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)


def test_bad_option_is_a_config_error_naming_the_key(processed, tmp_path):
    checkpoints = {s: p for s, p in processed["checkpoints"].items() if s != "editorial"}
    with pytest.raises(StageError) as info:
        run_stage(processed["item"], "editorial", tmp_path, checkpoints, options={"min_clip_seconds": "long"})
    assert info.value.error_class == errors.CONFIG_ERROR and "options.min_clip_seconds" in info.value.message
    with pytest.raises(StageError, match="must be above 0 and not above max_clip_seconds"):
        run_stage(
            processed["item"],
            "editorial",
            tmp_path,
            checkpoints,
            options={"min_clip_seconds": 5, "max_clip_seconds": 2},
        )


def test_missing_input_checkpoint_is_reported_not_retried(processed, tmp_path):
    with pytest.raises(StageError) as info:
        run_stage(processed["item"], "enriched", tmp_path, {})
    assert (
        info.value.error_class == errors.PERSISTENT
        and "transcribed checkpoint is missing" in info.value.message
    )


def test_demo_media_is_quick_and_describes_every_file(demo_media):
    items = demo_media["items"]
    assert [d["expectation"] for d in items].count("ok") == 2
    assert {d["expectation"] for d in items} == {"ok", "corrupt source", "missing dependency", "waiting"}
    for d in items:
        assert Path(d["source"]).exists() and d["id"].startswith(d["show"].lower().replace(" ", "-") + "_ep")
    assert os.path.getsize(by_expectation(demo_media, "ok")["source"]) < 200_000
