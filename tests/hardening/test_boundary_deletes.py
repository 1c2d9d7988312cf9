"""Nothing deleted that ewg does not own (issue 9).

`ewg demo` replaces only a folder it made as a demo (a `.ewg-demo` marker naming its database, not
text in ewg.toml) and asks or needs --force even then. The items root carries an ownership marker
naming the database; the sweep, deep-clean, the verbs and doctor delete only ewg-looking entries in a
root whose marker matches (`items = "."` keeps sources/ and backups/; two workspaces sharing one items
folder keep each other's checkpoints). A verb's files go only after its transaction commits, and the
item is not claimed meanwhile. The pre-migration backup is never rotated away by scheduled backups.
"""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from ewgtest import fast_demo_text  # noqa: E402

from engine import checkpoints, ownership  # noqa: E402
from engine.db import SCHEMA_VERSION  # noqa: E402
from engine.demo import create_demo, demo_config, seed_episodes, set_key  # noqa: E402
from engine.runtime import Engine  # noqa: E402
from engine.verbs import Operator, VerbError  # noqa: E402
from engine.workspace import add_episode, init_workspace, open_workspace  # noqa: E402


def ewg(*args: str, timeout: float = 120) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return proc.returncode, proc.stdout, proc.stderr


def tree(root: Path) -> set[str]:
    """Every path under root, relative: what a delete would change (SQLite's -wal/-shm come and go)."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.name.endswith(("-wal", "-shm"))}


def finished_workspace(root: Path, count: int = 2, items: str | None = None, extra: str = ""):
    text = fast_demo_text(faults=False) + extra
    if items is not None:
        text = set_key(text, "items", json.dumps(items))
    ws = init_workspace(root, text)
    seed_episodes(ws, count)
    eng = Engine(ws, workers=2).start()
    assert eng.run_until_idle(timeout=120)
    eng.stop()
    return ws


def checkpoint_files(ws) -> dict[Path, dict]:
    """Every recorded checkpoint folder with files, and its manifest."""
    found = {}
    for r in ws.store.read("SELECT item_id, stage, manifest FROM checkpoints WHERE stale=0"):
        manifest = json.loads(r["manifest"])
        if manifest["files"]:
            found[ws.item_dir(r["item_id"]) / r["stage"]] = manifest
    return found


# -- ewg demo ----------------------------------------------------------------------------------------
def test_demo_does_not_wipe_a_workspace_whose_config_mentions_demo_in_a_comment(tmp_path):
    real = tmp_path / "work"
    ws = init_workspace(
        real, fast_demo_text(faults=False).replace("[paths]", "# copied from the [demo] docs\n[paths]")
    )
    add_episode(ws, "interview_ep001_2026-11-01", source="/media/interview.mp4", title="real work")
    (real / "notes.txt").write_text("the operator's own notes\n")
    identity, before = ws.store.identity(), tree(real)
    ws.close()
    code, out, err = ewg("demo", str(real), "--simulated", "--episodes", "1", "--headless", timeout=60)
    assert code == 2, out + err
    assert str(real) in err and "Nothing was deleted" in err and "ewg demo DIR" in err
    assert ".ewg-demo" in err and "Traceback" not in err
    assert tree(real) == before
    ws = open_workspace(real)
    assert ws.store.identity() == identity
    assert [r["id"] for r in ws.store.read("SELECT id FROM items")] == ["interview_ep001_2026-11-01"]
    ws.close()


def test_demo_refuses_a_demo_looking_workspace_without_its_marker(tmp_path):
    """A real [demo] table in ewg.toml proves nothing: without the marker ewg wrote, the folder is kept."""
    root = tmp_path / "looks-like-a-demo"
    ws = init_workspace(root, demo_config(faults=False))
    (root / "sources").mkdir()
    (root / "sources" / "raw-footage.mp4").write_bytes(os.urandom(2048))
    ws.close()
    before = tree(root)
    code, _out, err = ewg("demo", str(root), "--simulated", "--episodes", "1", "--headless", timeout=60)
    assert code == 2 and str(root) in err and "no .ewg-demo marker" in err, err
    assert tree(root) == before


def test_demo_replaces_its_own_demo_only_when_asked(tmp_path):
    root = tmp_path / "demo"
    ws = create_demo(root, count=1, faults=False)
    assert ownership.demo_marker(root) == ws.store.identity()
    assert (root / ownership.DEMO_MARKER).stat().st_mode & 0o777 == 0o600
    ws.close()
    before = tree(root)
    # No terminal to ask on: refused, pointing at --force.
    code, _out, err = ewg("demo", str(root), "--simulated", "--episodes", "1", "--headless", timeout=60)
    assert code == 2 and "--force" in err and "Nothing was deleted" in err, err
    assert tree(root) == before
    # On a terminal it asks, and anything but yes keeps it.
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ewg_tui.cli", "demo", str(root), "--simulated", "--headless"],
        stdin=child,
        stdout=child,
        stderr=child,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    os.close(child)
    seen = b""
    deadline = time.monotonic() + 60
    while b"[y/N]" not in seen and time.monotonic() < deadline:
        seen += os.read(main, 4096)
    os.write(main, b"n\n")
    assert proc.wait(timeout=60) == 1
    os.close(main)
    assert b"Replace the demo workspace" in seen
    assert tree(root) == before


def test_demo_force_replaces_a_demo_ewg_made(tmp_path):
    root = tmp_path / "demo"
    old = create_demo(root, count=1, faults=False)
    old_identity = old.store.identity()
    old.close()
    code, out, err = ewg(
        "demo", str(root), "--simulated", "--episodes", "1", "--headless", "--force", timeout=180
    )
    assert code == 0, out + err
    ws = open_workspace(root, readonly=True)
    assert ws.store.identity() != old_identity
    assert ownership.demo_marker(root) == ws.store.identity()
    ws.close()


# -- the items root ----------------------------------------------------------------------------------
def test_items_dot_deep_clean_keeps_sources_and_backups(tmp_path):
    root = tmp_path / "ws"
    ws = finished_workspace(root, items=".")
    (root / "sources" / "Morning Brief").mkdir(parents=True)
    (root / "sources" / "Morning Brief" / "ep1.mp4").write_bytes(os.urandom(1024))
    ws.store.backup(ws.backups)
    item_id = ws.store.read_one("SELECT id FROM items WHERE kind='episode'")["id"]
    leftover = checkpoints.temp_dir(ws.item_dir(item_id), "rendered", 9999)  # ewg's own: goes
    (leftover / "partial.bin").write_bytes(b"x")
    checkpointed = checkpoint_files(ws)
    ws.close()
    keep = {p for p in tree(root) if p.startswith(("sources", "backups"))} | {
        "ewg.toml",
        "ewg.db",
        ".ewg-items",
    }
    code, out, err = ewg("--workspace", str(root), "deep-clean", "--reason", "test")
    assert code == 0, out + err
    after = tree(root)
    assert keep <= after, keep - after
    assert not leftover.exists()
    ws = open_workspace(root)
    for folder, manifest in checkpointed.items():
        assert checkpoints.verify(folder, manifest) == []
    ws.close()


def test_items_dot_without_a_marker_refuses_every_delete(tmp_path):
    """An older workspace with items = "." (no marker; ewg.toml, the database, sources/ in the root):
    the root cannot be adopted, so deep-clean, the sweep and doctor --repair delete nothing."""
    root = tmp_path / "ws"
    ws = finished_workspace(root, items=".")
    (root / "sources" / "show").mkdir(parents=True)
    (root / "sources" / "show" / "ep.mp4").write_bytes(os.urandom(512))
    ws.store.backup(ws.backups)
    item_id = ws.store.read_one("SELECT id FROM items WHERE kind='episode'")["id"]
    (checkpoints.temp_dir(ws.item_dir(item_id), "rendered", 9999) / "partial.bin").write_bytes(b"x")
    ws.close()
    (root / ownership.ITEMS_MARKER).unlink(missing_ok=True)  # as made before markers existed
    before = tree(root)
    code, _out, err = ewg("--workspace", str(root), "deep-clean")
    assert code == 2 and 'items = "."' in err and "ewg.toml" in err and "nothing was deleted" in err, err
    assert "Traceback" not in err
    code, _out, err = ewg("--workspace", str(root), "run", "--until-idle")
    assert code == 2 and 'items = "."' in err, err
    code, out, _err = ewg("--workspace", str(root), "doctor", "--repair")
    assert "ownership" in out and 'items = "."' in out
    assert tree(root) == before


def test_two_workspaces_sharing_one_items_folder_keep_each_others_checkpoints(tmp_path):
    first = finished_workspace(tmp_path / "a", items="../shared")
    theirs = checkpoint_files(first)
    first_item = first.store.read_one("SELECT id FROM items WHERE kind='episode'")["id"]
    leftover = checkpoints.temp_dir(first.item_dir(first_item), "rendered", 4242)
    first.close()
    assert theirs
    # A new workspace cannot be created on that folder ...
    with pytest.raises(ownership.OwnershipError, match="another ewg workspace"):
        init_workspace(tmp_path / "refused", set_key(fast_demo_text(faults=False), "items", '"../shared"'))
    assert not (tmp_path / "refused" / "ewg.db").exists()
    # ... and one pointed at it later deletes nothing there.
    second = finished_workspace(tmp_path / "b", count=1)
    second.close()
    toml = tmp_path / "b" / "ewg.toml"
    toml.write_text(set_key(toml.read_text(), "items", '"../shared"'))
    item = json.loads(ewg("--workspace", str(tmp_path / "b"), "status", "--json")[1])["episodes"][0]["id"]
    (tmp_path / "shared" / item / "cache").mkdir()  # the first workspace's item of the same id has a cache
    (tmp_path / "shared" / item / "cache" / "model.bin").write_bytes(b"theirs")
    before = tree(tmp_path / "shared")
    code, _out, err = ewg("--workspace", str(tmp_path / "b"), "deep-clean")
    assert code == 2 and "two workspaces share one items folder" in err and "nothing was deleted" in err, err
    code, _out, err = ewg("--workspace", str(tmp_path / "b"), "run", "--until-idle")
    assert code == 2 and "another ewg database" in err, err
    code, out, _err = ewg("--workspace", str(tmp_path / "b"), "doctor", "--repair")
    assert "another ewg database" in out
    code, _out, err = ewg("--workspace", str(tmp_path / "b"), "clear-cache", item)
    assert code == 2 and "another ewg database" in err, err
    assert tree(tmp_path / "shared") == before and leftover.exists()
    # A second host of the same database shares its identity: its deep-clean is allowed.
    host2 = tmp_path / "host2"
    host2.mkdir()
    text = (tmp_path / "a" / "ewg.toml").read_text()
    (host2 / "ewg.toml").write_text(set_key(text, "database", json.dumps(str(tmp_path / "a" / "ewg.db"))))
    code, out, err = ewg("--workspace", str(host2), "deep-clean")
    assert code == 0, out + err
    assert not leftover.exists()  # its own leftover went
    ws = open_workspace(tmp_path / "a")
    for folder, manifest in theirs.items():
        assert checkpoints.verify(folder, manifest) == [], folder
    ws.close()


def test_an_older_workspace_is_adopted_when_it_holds_only_ewg_entries(tmp_path):
    ws = finished_workspace(tmp_path / "ws")
    root, identity = ws.items_root, ws.store.identity()
    ws.close()
    (root / ownership.ITEMS_MARKER).unlink(missing_ok=True)
    (root / "orphan_ep009").mkdir()  # an item folder no item names any more: ewg's by its contents
    (root / "orphan_ep009" / ".tmp-transcribed-3").mkdir()
    (root / "stranger").mkdir()  # not ewg's: its file proves nothing
    (root / "stranger" / "cv.pdf").write_bytes(b"%PDF")
    ws = open_workspace(tmp_path / "ws")
    assert ownership.read_marker(root / ownership.ITEMS_MARKER) is None  # "stranger" blocks adoption
    with pytest.raises(VerbError, match="stranger/"):
        Operator(ws).deep_clean()
    ws.close()
    (root / "stranger" / "cv.pdf").rename(tmp_path / "cv.pdf")
    (root / "stranger").rmdir()
    ws = open_workspace(tmp_path / "ws")
    assert ownership.read_marker(root / ownership.ITEMS_MARKER) == identity
    assert (root / ownership.ITEMS_MARKER).stat().st_mode & 0o777 == 0o600
    Operator(ws).deep_clean()
    assert not (root / "orphan_ep009").exists()
    ws.close()


# -- file work after commit --------------------------------------------------------------------------
class CommitFails:
    """The next COMMIT of this store fails as a full disk would (the transaction is rolled back)."""

    def __init__(self, store, monkeypatch) -> None:
        real = store._execute_busy_safe

        def execute(conn, sql):
            if sql == "COMMIT" and self.armed:
                self.armed = False
                raise sqlite3.OperationalError("database or disk is full")
            return real(conn, sql)

        self.armed = True
        monkeypatch.setattr(store, "_execute_busy_safe", execute)


def test_verb_files_stay_when_the_commit_fails(tmp_path, monkeypatch):
    ws = finished_workspace(tmp_path / "ws", count=1)
    op = Operator(ws, actor="tester")
    episode = ws.store.read_one("SELECT id FROM items WHERE kind='episode'")["id"]
    clip = ws.store.read_one("SELECT id FROM items WHERE kind='clip'")["id"]
    cache = ws.item_dir(episode) / "cache"
    cache.mkdir(parents=True)
    (cache / "model.bin").write_bytes(b"cached")
    clip_files = tree(ws.item_dir(clip))
    assert clip_files
    events = ws.store.read_one("SELECT COUNT(*) FROM events")[0]
    for verb in (lambda: op.clear_cache([episode]), lambda: op.delete_and_retry_clips([clip])):
        CommitFails(ws.store, monkeypatch)
        with pytest.raises(sqlite3.OperationalError):
            verb()
        assert (cache / "model.bin").read_bytes() == b"cached"
        assert tree(ws.item_dir(clip)) == clip_files
        assert ws.store.read_one("SELECT COUNT(*) FROM events")[0] == events  # nothing recorded either
        monkeypatch.undo()
    op.clear_cache([episode])
    op.delete_and_retry_clips([clip])
    assert not cache.exists() and not ws.item_dir(clip).exists()
    assert ws.store.read("SELECT key FROM engine_state WHERE key LIKE 'files:%'") == []
    ws.close()


def test_an_item_is_not_claimed_while_its_files_are_being_removed(tmp_path, monkeypatch):
    ws = finished_workspace(tmp_path / "ws", count=1)
    clip = ws.store.read_one("SELECT id FROM items WHERE kind='clip'")["id"]
    seen = {}
    real = ownership.remove_in_item

    def remove(item_dir, names):
        seen["claim"] = ws.store.claim("test:1:1", time.time() + 1, 30.0)  # committed, files still there
        seen["files"] = item_dir.exists()
        real(item_dir, names)

    monkeypatch.setattr(ownership, "remove_in_item", remove)
    Operator(ws, actor="tester").delete_and_retry_clips([clip])
    assert seen == {"claim": None, "files": True}
    assert ws.store.read_one("SELECT status FROM items WHERE id=?", (clip,))["status"] == "queued"
    claim = ws.store.claim("test:1:1", time.time() + 1, 30.0)
    assert claim is not None and claim.item_id == clip
    ws.close()


DIES_AFTER_COMMIT = """
import os, sys
from pathlib import Path
from engine import ownership
from engine.verbs import Operator
from engine.workspace import open_workspace

ownership.remove_in_item = lambda *args: os._exit(9)  # killed between COMMIT and the file removal
Operator(open_workspace(Path(sys.argv[1]))).delete_and_retry_clips([sys.argv[2]])
"""


def test_removals_of_a_verb_that_died_after_its_commit_are_finished_at_start(tmp_path):
    ws = finished_workspace(tmp_path / "ws", count=1)
    clip = ws.store.read_one("SELECT id FROM items WHERE kind='clip'")["id"]
    ws.close()
    proc = subprocess.run(
        [sys.executable, "-c", DIES_AFTER_COMMIT, str(tmp_path / "ws"), clip],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert proc.returncode == 9
    ws = open_workspace(tmp_path / "ws")
    assert ws.store.read_one("SELECT status FROM items WHERE id=?", (clip,))["status"] == "queued"
    assert ws.item_dir(clip).exists()
    assert ws.store.claim("test:1:1", time.time() + 1, 30.0) is None  # held while its files wait
    _code, out, _err = ewg("--workspace", str(tmp_path / "ws"), "doctor")
    assert "wait for the file removal of a verb whose process died" in out and clip in out
    assert Engine(ws, workers=0).recover()
    assert not ws.item_dir(clip).exists()
    assert ws.store.read("SELECT key FROM engine_state WHERE key LIKE 'files:%'") == []
    claim = ws.store.claim("test:1:1", time.time() + 1, 30.0)
    assert claim is not None and claim.item_id == clip
    ws.close()


def test_a_running_engine_finishes_the_removals_of_a_verb_that_died(tmp_path):
    ws = finished_workspace(tmp_path / "ws", count=1)
    clip = ws.store.read_one("SELECT id FROM items WHERE kind='clip'")["id"]
    eng = Engine(ws, workers=1).start()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", DIES_AFTER_COMMIT, str(tmp_path / "ws"), clip],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=60,
        )
        assert proc.returncode == 9
        assert eng.run_until_idle(timeout=60)
    finally:
        eng.stop()
    row = ws.store.read_one("SELECT status FROM items WHERE id=?", (clip,))
    assert row["status"] == "done"  # rerun from `generated` once its old files were gone
    assert ws.store.read("SELECT key FROM engine_state WHERE key LIKE 'files:%'") == []
    ws.close()


# -- backups -----------------------------------------------------------------------------------------
def test_the_pre_migration_backup_survives_scheduled_rotation(tmp_path):
    ws = init_workspace(tmp_path / "ws", fast_demo_text(faults=False))
    ws.store.connection().execute(f"PRAGMA user_version={SCHEMA_VERSION - 1}")
    ws.close()
    ws = open_workspace(tmp_path / "ws")  # migrates, after its backup
    (pre,) = ws.backups.glob("*pre-migration*")
    made = [ws.store.backup(ws.backups) for _ in range(13)]  # what the health loop calls every interval
    assert pre.exists()
    scheduled = sorted(ws.backups.glob("*-scheduled*.db"))
    assert set(scheduled) == set(made[-10:])  # the newest ten, also within one second (-2 ... -13)
    ws.close()
