"""The source-folder scanner: stability window, ids, collisions, cheap fingerprints."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from engine.media import discovery
from engine.media.discovery import ScanConfigError, episode_number, scan, scan_sources

NOW = 1_790_000_000.0  # 2026-09-21 UTC


def _file(path: Path, data: bytes = b"x" * 1000, mtime: float = NOW - 3600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


@pytest.mark.parametrize(
    "name, number",
    [
        ("Episode 012 - Agents.mp4", 12),
        ("show_ep7.mp4", 7),
        ("E05 pilot.mkv", 5),
        ("talk #31.mov", 31),
        ("2026-01-05 interview 44.mp4", 44),
        ("20260105_part3.mp4", 3),
        ("no number.mp4", 0),
    ],
)
def test_episode_number_from_the_file_name(name, number):
    assert episode_number(name) == number


def test_ids_follow_the_ai_ewg_scheme_and_titles_are_readable(tmp_path):
    _file(tmp_path / "src" / "AI Weekly" / "Episode 012 - Agents.mp4", mtime=NOW - 86400)
    found = scan_sources(tmp_path, {"root": "src", "stable_seconds": 30}, NOW)
    assert found == [
        (
            "ai-weekly_ep012_2026-09-20",
            str(tmp_path / "src" / "AI Weekly" / "Episode 012 - Agents.mp4"),
            "AI Weekly",
            "Episode 012 - Agents",
        )
    ]


def test_a_file_still_being_copied_waits_for_the_stability_window(tmp_path):
    folder = tmp_path / "shows" / "lab"
    growing = _file(folder / "ep1.mp4", b"a" * 100, mtime=NOW)
    cfg = {"shows": {"Lab": "shows/lab"}, "stable_seconds": 30}
    result = scan(tmp_path, cfg, NOW)
    assert result.ready == [] and result.waiting[0][0] == growing
    assert "still being copied" in result.waiting[0][1]
    # It grows: the window starts again from the scan that saw the change.
    _file(growing, b"a" * 200, mtime=NOW + 20)
    assert scan_sources(tmp_path, cfg, NOW + 25) == []
    assert scan_sources(tmp_path, cfg, NOW + 40) == []  # 15 s since the change was seen: not yet
    ready = scan_sources(tmp_path, cfg, NOW + 56)  # 31 s of stable size and mtime
    assert [r[1] for r in ready] == [str(growing)]


def test_old_unchanged_files_are_taken_on_the_first_scan(tmp_path):
    _file(tmp_path / "s" / "Show" / "ep1.mp4", mtime=NOW - 31)
    _file(tmp_path / "s" / "Show" / "ep2.mp4", mtime=NOW - 29)
    ids = [r[0] for r in scan_sources(tmp_path, {"root": "s", "stable_seconds": 30}, NOW)]
    assert ids == ["show_ep001_2026-09-21"]


def test_include_and_exclude_globs(tmp_path):
    base = tmp_path / "s" / "Show"
    _file(base / "ep1.mp4")
    _file(base / "ep2.mp4.part")
    _file(base / "notes.txt")
    _file(base / ".ep3.mp4")
    _file(base / "raw" / "ep4.mov")
    _file(base / "raw" / "ep5.mkv")
    cfg = {
        "root": "s",
        "stable_seconds": 0,
        "include": ["*.mp4", "*.mov", "*.mkv"],
        "exclude": [".*", "raw/*.mkv"],
    }
    names = sorted(Path(r[1]).name for r in scan_sources(tmp_path, cfg, NOW))
    assert names == ["ep1.mp4", "ep4.mov"]


def test_id_collisions_get_numbered_suffixes_in_path_order_and_are_never_dropped(tmp_path):
    base = tmp_path / "s" / "Show"
    for name in ("b ep1.mp4", "a ep1.mp4", "c ep001.mkv"):
        _file(base / name, name.encode() * 100, mtime=NOW - 7200)  # different content: different episodes
    cfg = {"root": "s", "stable_seconds": 0}
    found = {Path(r[1]).name: r[0] for r in scan_sources(tmp_path, cfg, NOW)}
    assert found == {
        "a ep1.mp4": "show_ep001_2026-09-21",
        "b ep1.mp4": "show_ep001_2026-09-21-2",
        "c ep001.mkv": "show_ep001_2026-09-21-3",
    }
    # A new file that sorts first must not steal an id that is already given out.
    _file(base / "0 ep1.mp4", b"zero" * 100, mtime=NOW - 7200)
    again = {Path(r[1]).name: r[0] for r in scan_sources(tmp_path, cfg, NOW + 10)}
    assert again == {**found, "0 ep1.mp4": "show_ep001_2026-09-21-4"}


def test_an_id_stays_with_its_file_when_the_file_is_touched(tmp_path):
    path = _file(tmp_path / "s" / "Show" / "ep9.mp4", mtime=NOW - 86400 * 3)
    cfg = {"root": "s", "stable_seconds": 0}
    first = scan_sources(tmp_path, cfg, NOW)
    os.utime(path, (NOW, NOW))
    assert scan_sources(tmp_path, cfg, NOW + 1) == first


def test_rescans_reuse_the_content_fingerprint_until_size_or_mtime_change(tmp_path, monkeypatch):
    path = _file(tmp_path / "s" / "Show" / "ep1.mp4", b"0123456789" * 50_000)
    cfg = {"root": "s", "stable_seconds": 0}
    calls = []
    real = discovery.content_fingerprint
    monkeypatch.setattr(discovery, "content_fingerprint", lambda p, size: calls.append(p) or real(p, size))
    first = scan(tmp_path, cfg, NOW).ready[0].fingerprint
    assert scan(tmp_path, cfg, NOW + 1).ready[0].fingerprint == first
    assert len(calls) == 1
    data = bytearray(path.read_bytes())
    data[-5:] = b"ZZZZZ"  # same size; the end sample sees the change
    _file(path, bytes(data), mtime=NOW - 3600 + 1)
    changed = scan(tmp_path, {**cfg}, NOW + 2).ready[0].fingerprint
    assert changed != first and len(calls) == 2
    state = json.loads((tmp_path / ".ewg-scan.json").read_text())
    assert state["files"][str(path)]["content"] == changed


def test_the_content_fingerprint_reads_three_one_mib_samples(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(8 * 1024 * 1024))
    digest = discovery.content_fingerprint(path, path.stat().st_size)
    copy = tmp_path / "elsewhere" / "renamed.bin"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    assert discovery.content_fingerprint(copy, copy.stat().st_size) == digest  # a copy is the same source
    with open(path, "r+b") as fh:  # a byte in the last MiB changes the fingerprint
        fh.seek(8 * 1024 * 1024 - 10)
        fh.write(b"\x00" if fh.read(1) != b"\x00" else b"\x01")
    changed = discovery.content_fingerprint(path, path.stat().st_size)
    assert changed != digest
    with open(path, "r+b") as fh:  # change a byte no sample covers (between the first and middle MiB)
        fh.seek(2 * 1024 * 1024)
        fh.write(b"\x00" if fh.read(1) != b"\x00" else b"\x01")
    assert discovery.content_fingerprint(path, path.stat().st_size) == changed


def test_bad_settings_name_the_key(tmp_path):
    with pytest.raises(ScanConfigError, match="set `root`"):
        scan_sources(tmp_path, {}, NOW)
    with pytest.raises(ScanConfigError, match="unknown key"):
        scan_sources(tmp_path, {"root": ".", "stable": 3}, NOW)
    with pytest.raises(ScanConfigError, match="stable_seconds"):
        scan_sources(tmp_path, {"root": ".", "stable_seconds": -1}, NOW)


def test_shows_sharing_a_slug_are_told_apart_not_refused(tmp_path):
    _file(tmp_path / "s" / "AI Weekly" / "ep1.mp4", b"upper" * 100)
    _file(tmp_path / "s" / "ai_weekly" / "ep1.mp4", b"lower" * 100)
    cfg = {"root": "s", "stable_seconds": 0}
    result = scan(tmp_path, cfg, NOW)
    ids = {e.show: e.item_id for e in result.ready}
    assert ids["AI Weekly"] == "ai-weekly_ep001_2026-09-21"  # first by name keeps the readable slug
    assert re.fullmatch(r"ai-weekly-[0-9a-f]{6}_ep001_2026-09-21", ids["ai_weekly"])
    assert [p.why for p in result.new_problems] == [
        f"shows 'AI Weekly' and 'ai_weekly' share the id prefix 'ai-weekly'; new episodes of 'ai_weekly' "
        f"use {ids['ai_weekly'].split('_')[0]!r} (rename a folder to choose)"
    ]
    again = scan(tmp_path, cfg, NOW + 1)
    assert {e.show: e.item_id for e in again.ready} == ids  # deterministic
    assert len(again.problems) == 1 and again.new_problems == []  # reported once


def test_demo_media_ids_match_the_scanner(demo_media, tmp_path):
    ready = {
        r[0]: r[1]
        for r in scan_sources(
            tmp_path,
            {"root": str(demo_media["folder"]), "stable_seconds": 30},
            max(os.path.getmtime(d["source"]) for d in demo_media["items"]) + 1,
        )
    }
    for entry in demo_media["items"]:
        if entry["expectation"] == "waiting":
            assert entry["id"] not in ready
        else:
            assert ready[entry["id"]] == entry["source"]


@pytest.mark.parametrize(
    "name, day",
    [
        ("2008-05-20 Interview.mp4", "2008-05-20"),
        ("show_20080520_ep3.mp4", "2008-05-20"),
        ("Talk 2008_05_20.mov", "2008-05-20"),
        ("talk.2008.05.20.mkv", "2008-05-20"),
        ("2008-13-45 then 2009-01-02.mp4", "2009-01-02"),  # the first real date
        ("2008-05_20 mixed separators.mp4", None),
        ("120080520 longer number.mp4", None),
        ("2008-02-30 no such day.mp4", None),
        ("Episode 012 - Agents.mp4", None),
    ],
)
def test_a_real_date_in_the_file_name(name, day):
    assert discovery.name_date(name) == day


def test_the_episode_date_is_the_one_in_the_name_else_the_mtime(tmp_path):
    _file(tmp_path / "s" / "Show" / "2008-05-20 ep4.mp4", b"dated", mtime=NOW - 86400)
    _file(tmp_path / "s" / "Show" / "20080521 ep5.mp4", b"compact", mtime=NOW - 86400)
    _file(tmp_path / "s" / "Show" / "2008-02-30 ep6.mp4", b"not a date", mtime=NOW - 86400)
    _file(tmp_path / "s" / "Show" / "ep7.mp4", b"undated", mtime=NOW - 86400)
    ids = sorted(r[0] for r in scan_sources(tmp_path, {"root": "s", "stable_seconds": 0}, NOW))
    assert ids == [
        "show_ep004_2008-05-20",
        "show_ep005_2008-05-21",
        "show_ep006_2026-09-20",
        "show_ep007_2026-09-20",
    ]


def test_long_digit_runs_are_not_episode_numbers(tmp_path):
    assert episode_number("upload 1699999999123 part 4.mp4") == 4
    assert episode_number("1699999999123.mp4") == 0


def test_a_state_file_from_before_content_fingerprints_keeps_its_ids(tmp_path):
    path = _file(tmp_path / "s" / "Show" / "ep1.mp4", b"old" * 100, mtime=NOW - 86400 * 9)
    st = path.stat()
    old_state = {
        "version": 1,
        "files": {str(path): {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "since": 0.0, "hash": "ab"}},
        "ids": {str(path): "show_ep001_2020-01-01"},  # given under older rules: it stays
    }
    (tmp_path / ".ewg-scan.json").write_text(json.dumps(old_state))
    [entry] = scan(tmp_path, {"root": "s", "stable_seconds": 30}, NOW).ready
    assert entry.item_id == "show_ep001_2020-01-01" and not entry.new
    assert entry.fingerprint == discovery.content_fingerprint(path, st.st_size)
