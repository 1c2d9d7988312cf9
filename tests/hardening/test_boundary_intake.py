"""Intake nothing can stop: hostile source folders, and identity that survives copies and lost state.

One bad entry (a show with no Latin letters, an over-long name, a name that is not UTF-8, a folder too
deep to list) never stops a scan: it gets a valid id or is reported once and skipped, and every other
file is still taken. The same source (by content) never becomes a second episode: not after the
workspace is copied, the scan-state file is lost, or the file is renamed or moved.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from ewgtest import fast_demo_text  # noqa: E402

from engine.clock import FakeClock  # noqa: E402
from engine.db import SCHEMA_VERSION, SQLiteStore  # noqa: E402
from engine.intake import scan_once  # noqa: E402
from engine.media.discovery import SLUG_MAX, printable, scan, show_slug  # noqa: E402
from engine.runtime import Engine  # noqa: E402
from engine.workspace import ITEM_ID_RE, check_item_id, init_workspace, open_workspace  # noqa: E402

NOW = 1_790_000_000.0  # 2026-09-21 UTC
OLD = NOW - 86400 * 3  # 2026-09-18: settled long ago
SOURCES = '\n[sources]\nroot = "sources"\nstable_seconds = 30.0\nscan_interval = 0.0\n'


def put(path: Path, data: bytes | None = None, mtime: float = OLD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if data is not None else os.urandom(4096))
    os.utime(path, (mtime, mtime))
    return path


def workspace(root: Path, clock: FakeClock | None = None):
    return init_workspace(root, fast_demo_text(faults=False) + SOURCES, clock=clock or FakeClock(NOW))


def episodes(ws) -> dict[str, str]:
    return {r["id"]: r["source"] for r in ws.store.read("SELECT id, source FROM items WHERE kind='episode'")}


def ewg(*args: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", *args],
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


# -- one bad entry never stops a scan -------------------------------------------------------------------


HOSTILE_SHOWS = [
    "日本語の番組",  # no Latin letters: was an id starting with `_`, and the whole scan aborted
    "Новости",
    "!!!",
    "🎙️🎧",
    "\u202eevil",  # a bidi override
    "Café Société",
    "Straße & Œuvre",
    "2024",
    "x" * 250,  # over-long
]


@pytest.mark.parametrize("name", HOSTILE_SHOWS)
def test_every_show_name_gives_a_valid_bounded_id(name):
    slug = show_slug(name)
    item_id = f"{slug}_ep999999_2026-09-21-99"
    assert check_item_id(item_id) == item_id and ITEM_ID_RE.match(item_id)
    assert 0 < len(slug) <= SLUG_MAX and slug == show_slug(name)  # stable
    assert len(item_id) < 100  # leaves room for clip ids (`{episode}__{key}`) under the 200 limit


def test_readable_slugs_for_latin_names_and_a_short_hash_for_the_rest():
    assert show_slug("Café Société") == "cafe-societe"
    assert show_slug("Straße & Œuvre") == "strasse-oeuvre"
    assert show_slug("日本語 News") == "news"
    assert show_slug("日本語の番組").startswith("show-") and len(show_slug("日本語の番組")) == 11
    assert show_slug("日本語の番組") != show_slug("Новости")


def test_non_latin_and_over_long_show_folders_are_taken_with_the_rest(tmp_path):
    ws = workspace(tmp_path / "ws")
    src = ws.root / "sources"
    for i, name in enumerate(HOSTILE_SHOWS + ["y" * 60 + " one", "y" * 60 + " two", "Plain"]):
        put(src / name / f"ep{i + 1}.mp4")
    intake = scan_once(ws)
    assert len(intake.added) == len(HOSTILE_SHOWS) + 3
    [collision] = intake.problems  # nothing skipped; the one shared prefix is reported
    assert "share the id prefix" in collision.why and collision.path.name == "y" * 60 + " two"
    assert all(check_item_id(i) for i in intake.added)
    shows = {r["show"]: r["id"] for r in ws.store.read("SELECT id, show FROM items")}
    assert shows["Plain"] == "plain_ep012_2026-09-18"
    # Two long names that agree on their first 48 characters are not merged into one prefix.
    one, two = shows["y" * 60 + " one"], shows["y" * 60 + " two"]
    assert one.split("_")[0] != two.split("_")[0]
    ws.close()


def test_a_name_that_is_not_utf8_is_reported_once_and_skipped_and_the_path_is_kept_losslessly(tmp_path):
    ws = workspace(tmp_path / "ws")
    show = ws.root / "sources" / "Show"
    good = put(show / "ep1.mp4")
    raw = os.fsencode(show) + b"/caf\xe9 ep2.mp4"  # Latin-1 bytes from an old share
    with open(raw, "wb") as fh:
        fh.write(b"latin-1 named")
    os.utime(raw, (OLD, OLD))
    bad_show = os.fsencode(ws.root / "sources") + b"/Sh\xf6w"
    os.mkdir(bad_show)
    with open(bad_show + b"/ep3.mp4", "wb") as fh:
        fh.write(b"in a folder whose name is not UTF-8")

    first = scan_once(ws)
    assert episodes(ws) == {"show_ep001_2026-09-18": str(good)}  # the rest is taken
    shown = {p.shown for p in first.problems}
    assert shown == {str(show) + "/caf\\xe9 ep2.mp4", str(ws.root / "sources") + "/Sh\\xf6w"}
    assert all(p.shown.isprintable() for p in first.problems)
    assert [p.path for p in first.new_problems] == [p.path for p in first.problems]
    assert "renamed" in first.problems[0].why
    # The scan state keeps the exact bytes (JSON escapes them), so "reported" means this very file.
    state = json.loads((ws.root / ".ewg-scan.json").read_text(encoding="utf-8"))
    assert raw in {os.fsencode(path) for path, _why in state["reported"]}

    second = scan_once(ws)
    assert len(second.problems) == 2 and second.new_problems == []  # once, not every scan
    os.rename(raw, os.fsencode(show) + b"/cafe ep2.mp4")  # the operator's fix
    third = scan_once(ws)
    assert "show_ep002_2026-09-18" in third.added and len(third.problems) == 1
    os.rename(os.fsencode(show) + b"/cafe ep2.mp4", raw)  # it comes back: reported again
    assert [p.shown for p in scan_once(ws).new_problems] == [str(show) + "/caf\\xe9 ep2.mp4"]
    ws.close()


def test_a_folder_too_deep_to_list_is_reported_and_the_rest_is_taken(tmp_path):
    ws = workspace(tmp_path / "ws")
    show = ws.root / "sources" / "Show"
    good = put(show / "ep1.mp4")
    fd = os.open(show, os.O_RDONLY)
    try:  # past PATH_MAX (4096): only reachable one folder at a time
        for _ in range(18):
            os.mkdir("d" * 250, dir_fd=fd)
            nxt = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        os.close(os.open("ep2.mp4", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    finally:
        os.close(fd)
    intake = scan_once(ws)
    assert episodes(ws) == {"show_ep001_2026-09-18": str(good)}
    assert len(intake.problems) == 1 and "cannot be listed (File name too long)" in intake.problems[0].why
    ws.close()
    subprocess.run(["rm", "-rf", str(show)], check=True)  # shutil.rmtree cannot go that deep either


def test_the_scheduled_scan_reports_a_bad_entry_once_not_every_interval(tmp_path, caplog):
    ws = workspace(tmp_path / "ws")
    show = ws.root / "sources" / "Show"
    put(show / "ep1.mp4")
    with open(os.fsencode(show) + b"/bad \xff ep2.mp4", "wb") as fh:
        fh.write(b"x")
    eng = Engine(ws, workers=1)  # not started: its health monitor's scan is what runs every interval
    woken = []
    eng.wake = lambda: woken.append(1)
    with caplog.at_level(logging.WARNING, logger="ewg.health"):
        for _ in range(3):
            eng.health._scan()
            ws.clock.advance(30)
    warnings = [r.getMessage() for r in caplog.records if r.name == "ewg.health"]
    assert warnings == [
        f"scan: {show}/bad \\xff ep2.mp4: the file name is not valid UTF-8; skipped until it "
        "is renamed (e.g. with convmv)"
    ]
    assert woken == [1] and len(episodes(ws)) == 1
    ws.close()


def test_ewg_scan_exits_0_with_a_warning_line_and_prints_nothing_raw(tmp_path):
    ws = workspace(tmp_path / "ws")
    ws.close()
    show = tmp_path / "ws" / "sources" / "日本語"
    put(show / "ep1.mp4")
    put(show / "ep2 \x1b]0;owned\x07 \x1b[31mred.mp4", mtime=NOW + 10**9)  # still "being copied": printed
    with open(os.fsencode(show) + b"/bad \xff\x1b[2J ep3.mp4", "wb") as fh:
        fh.write(b"x")
    code, out, err = ewg("--workspace", str(tmp_path / "ws"), "scan")
    assert code == 0 and "Traceback" not in err, err
    assert out.startswith("1 new episode(s), 0 already known, 1 waiting, 1 problem(s).")
    assert "  added show-" in out
    assert "\x1b" not in out and "\x07" not in out
    assert "ep2 \\x1b]0;owned\\x07 \\x1b[31mred.mp4" in out  # shown inert, still recognisable
    assert "  warning: " in out and "bad \\xff\\x1b[2J ep3.mp4: the file name is not valid UTF-8" in out
    code, out, _err = ewg("--workspace", str(tmp_path / "ws"), "scan", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["added"] == [] and doc["known"] == 1
    assert [s["file"].rsplit("/", 1)[1] for s in doc["problems"]] == ["bad \\xff\\x1b[2J ep3.mp4"]


# -- identity survives a copied workspace and a lost scan-state file -------------------------------------


def _three_episodes(root: Path):
    clock = FakeClock(NOW)
    ws = workspace(root, clock)
    src = ws.root / "sources"
    put(src / "AI Weekly" / "Episode 001 - Agents.mp4")
    put(src / "AI Weekly" / "2008-05-20 Episode 002.mp4")
    put(src / "Lab" / "ep7.mp4")
    assert len(scan_once(ws).added) == 3
    return ws


def test_a_copied_workspace_keeps_its_episodes_and_reads_its_own_sources(tmp_path):
    ws = _three_episodes(tmp_path / "ws")
    before = episodes(ws)
    ws.close()
    # `cp -r` without -p: every mtime is new, every absolute path is new, the state file is stale.
    shutil.copytree(tmp_path / "ws", tmp_path / "copy", copy_function=shutil.copyfile)
    clock = FakeClock(NOW + 86400 * 30)
    copy = open_workspace(tmp_path / "copy", clock=clock)
    assert scan_once(copy).added == []  # settling: the copies look freshly written
    clock.advance(60)
    intake = scan_once(copy)
    assert intake.added == [] and intake.known == 3 and sorted(intake.moved) == sorted(before)
    after = episodes(copy)
    assert sorted(after) == sorted(before)  # no second episode, and the same ids
    assert all(s.startswith(str(tmp_path / "copy" / "sources")) for s in after.values())  # its own files
    assert scan_once(copy).moved == []  # settled: nothing more to do
    copy.close()


def test_a_lost_scan_state_file_neither_duplicates_nor_merges_episodes(tmp_path):
    ws = _three_episodes(tmp_path / "ws")
    before = episodes(ws)
    (ws.root / ".ewg-scan.json").unlink()
    src = ws.root / "sources"
    for path in src.rglob("*.mp4"):  # touched since: the mtime date no longer matches the ids
        os.utime(path, (NOW - 3600, NOW - 3600))
    # A different file whose id by the rules is one already taken by an episode.
    stranger = put(src / "Lab" / "ep7 (director's cut).mp4", mtime=OLD)
    intake = scan_once(ws)
    after = episodes(ws)
    assert intake.added == ["lab_ep007_2026-09-18-2"]  # its own episode, not merged into ep007
    assert after == {**before, "lab_ep007_2026-09-18-2": str(stranger)}
    ws.close()


def test_a_renamed_or_moved_source_stays_the_same_episode(tmp_path):
    ws = _three_episodes(tmp_path / "ws")
    before = episodes(ws)
    src = ws.root / "sources"
    ep7 = before["lab_ep007_2026-09-18"]
    renamed = src / "Lab" / "archive" / "ep7 final.mp4"
    renamed.parent.mkdir()
    os.rename(ep7, renamed)
    moved = src / "Elsewhere" / "Agents.mp4"
    moved.parent.mkdir()
    os.rename(before["ai-weekly_ep001_2026-09-18"], moved)
    intake = scan_once(ws)
    assert intake.added == [] and sorted(intake.moved) == [
        "ai-weekly_ep001_2026-09-18",
        "lab_ep007_2026-09-18",
    ]
    assert episodes(ws) == {
        **before,
        "lab_ep007_2026-09-18": str(renamed),
        "ai-weekly_ep001_2026-09-18": str(moved),
    }
    event = ws.store.read_one("SELECT * FROM events WHERE verb='scan' ORDER BY id DESC LIMIT 1")
    assert json.loads(event["before"])["lab_ep007_2026-09-18"] == {"source": ep7}
    # A second copy of a source that is still in place is the same episode too, and moves nothing.
    put(src / "Lab" / "ep7 copy.mp4", renamed.read_bytes())
    again = scan_once(ws)
    assert (
        again.added == []
        and again.known == 4
        and again.moved == []
        and episodes(ws)["lab_ep007_2026-09-18"] == str(renamed)
    )
    renamed.unlink()  # ... until the file it reads is deleted: then it reads the copy
    last = scan_once(ws)
    assert last.moved == ["lab_ep007_2026-09-18"]
    assert episodes(ws)["lab_ep007_2026-09-18"] == str(src / "Lab" / "ep7 copy.mp4")
    assert scan_once(ws).moved == []
    ws.close()


def test_identical_files_are_one_episode_but_empty_files_are_not_one_source(tmp_path):
    ws = workspace(tmp_path / "ws")
    show = ws.root / "sources" / "Show"
    data = os.urandom(3 * 1024 * 1024 + 17)
    put(show / "ep1.mp4", data)
    put(show / "ep1 (copy).mp4", data)
    put(show / "ep2 upload failed.mp4", b"")
    put(show / "ep3 upload failed.mp4", b"")
    assert sorted(scan_once(ws).added) == [
        "show_ep001_2026-09-18",
        "show_ep002_2026-09-18",
        "show_ep003_2026-09-18",
    ]
    ws.close()


def test_episodes_from_before_fingerprints_get_one_on_the_next_scan(tmp_path):
    ws = _three_episodes(tmp_path / "ws")
    with ws.store.write() as conn:
        conn.execute("UPDATE items SET fingerprint = NULL")
    scan_once(ws)
    rows = ws.store.read("SELECT fingerprint FROM items")
    assert len(rows) == 3 and all(r[0] for r in rows)
    (ws.root / ".ewg-scan.json").unlink()
    ws.clock.advance(60)
    assert scan_once(ws).added == []  # identity by content from then on
    ws.close()


def test_migration_6_adds_the_fingerprint_column_and_can_be_rerun(tmp_path):
    store = SQLiteStore.create(tmp_path / "ewg.db")
    conn = store.connection()
    conn.execute("DROP INDEX ix_items_fingerprint")
    conn.execute("ALTER TABLE items DROP COLUMN fingerprint")  # a schema-5 database
    conn.execute("PRAGMA user_version=5")
    store.migrate()
    conn.execute("PRAGMA user_version=5")
    store.migrate()  # again, over a finished step
    assert store.schema_version() == SCHEMA_VERSION >= 6
    assert "fingerprint" in {r[1] for r in conn.execute("PRAGMA table_info(items)")}
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name='ix_items_fingerprint'").fetchone()
    store.close()
    assert sqlite3.connect(tmp_path / "ewg.db").execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_scan_without_a_registry_still_numbers_collisions_by_path(tmp_path):
    """The pure scanner (no database) keeps its rules: different content, same name rules, -2."""
    put(tmp_path / "s" / "Show" / "a ep1.mp4")
    put(tmp_path / "s" / "Show" / "b ep1.mp4")
    ids = sorted(e.item_id for e in scan(tmp_path, {"root": "s", "stable_seconds": 0}, NOW).ready)
    assert ids == ["show_ep001_2026-09-18", "show_ep001_2026-09-18-2"]


def test_a_damaged_reported_list_in_the_state_file_does_not_stop_the_scan(tmp_path):
    ws = workspace(tmp_path / "ws")
    show = ws.root / "sources" / "Show"
    put(show / "ep1.mp4")
    with open(os.fsencode(show) + b"/bad \xff.mp4", "wb") as fh:
        fh.write(b"x")
    state = ws.root / ".ewg-scan.json"
    state.write_text(json.dumps({"version": 1, "files": {}, "ids": {}, "reported": [7, "x", [1, 2, 3]]}))
    intake = scan_once(ws)
    assert intake.added == ["show_ep001_2026-09-18"] and len(intake.new_problems) == 1
    ws.close()


@pytest.mark.parametrize(
    "text, shown",
    [
        ("plain é 日本", "plain é 日本"),
        ("esc\x1b[2Jbell\x07", "esc\\x1b[2Jbell\\x07"),
        ("new\nline", "new\\nline"),
        ("bidi\u202eevil", "bidi\\u202eevil"),
        (os.fsdecode(b"latin \xe9"), "latin \\xe9"),
        ("lone \ud800", "lone \\ud800"),
    ],
)
def test_printable_makes_any_name_inert(text, shown):
    assert printable(text) == shown and printable(text).isprintable()
