"""Files and other users (issue 9): everything ewg creates is owner-only whatever the umask, a workspace
another user can write is refused (exit 2, the path and the chmod named) and reported by `ewg doctor`, and
no symbolic link planted in the items folder redirects a write (ARCHITECTURE.md contract 7).

Tests run as root: `chown` stands in for another account's files, `chmod o+w` for a careless umask."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from ewgtest import fast_demo_text

from engine import checkpoints
from engine.demo import seed_episodes
from engine.runtime import Engine
from engine.workspace import add_episode, init_workspace, open_workspace

ROOT = Path(__file__).resolve().parents[2]


def ewg(*args, timeout=180, umask=None):
    proc = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )
    return proc.returncode, proc.stdout, proc.stderr


def not_owner_only(root: Path) -> list[str]:
    """Every path under `root` (itself included, links not followed) that group or others can use."""
    loose = []
    for folder, dirs, files in os.walk(root):
        for path in [Path(folder), *(Path(folder) / n for n in (*dirs, *files))]:
            st = os.lstat(path)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                loose.append(f"{path.relative_to(root.parent)} {stat.filemode(st.st_mode)}")
    return sorted(set(loose))


@pytest.fixture
def umask_000():
    old = os.umask(0)
    yield
    os.umask(old)


# -- owner-only whatever the umask ---------------------------------------------------------------------
def test_ewg_init_under_umask_000_makes_nothing_others_can_use(tmp_path):
    code, _out, err = ewg("init", str(tmp_path / "ws"), umask=0)
    assert code == 0, err
    assert not_owner_only(tmp_path / "ws") == []
    assert stat.S_IMODE((tmp_path / "ws" / "ewg.toml").stat().st_mode) == 0o600


def test_ewg_demo_headless_under_umask_000_makes_nothing_others_can_use(tmp_path):
    """The real media demo: sources, the scanner's state, items, checkpoints, manifests, database files."""
    code, out, err = ewg("demo", str(tmp_path / "demo"), "--headless", "--episodes", "1", umask=0)
    assert code == 0, err + out
    made = [p for p in (tmp_path / "demo").rglob("*")]
    assert len(made) > 40 and (tmp_path / "demo" / ".ewg-scan.json").exists()
    assert any(p.name == "manifest.json" for p in made)
    assert not_owner_only(tmp_path / "demo") == []


def test_the_engine_embedded_under_umask_000_keeps_checkpoints_and_backups_owner_only(tmp_path, umask_000):
    """No CLI, so no umask of ours: the demo stage writes its files with the default mode 0o666."""
    ws = init_workspace(tmp_path / "ws", fast_demo_text(faults=False))
    try:
        seed_episodes(ws, 2)
        eng = Engine(ws, workers=2).start()
        try:
            assert eng.run_until_idle(timeout=60)
        finally:
            eng.stop()
        ws.store.backup(ws.backups)
        assert list(ws.items_root.rglob("manifest.json"))
        assert not_owner_only(ws.root) == []
    finally:
        ws.close()


# -- refusing a workspace another user can write --------------------------------------------------------
@pytest.fixture
def workspace(tmp_path):
    ws = init_workspace(tmp_path / "ws", fast_demo_text(faults=False))
    seed_episodes(ws, 1)
    yield ws
    ws.close()


def replace_stage(text: str, stage: str, body: str) -> str:
    table = rf"\[stages\.episode\.{stage}\]\nkind = \"demo\"\nduration = [^\n]*\n"
    new, n = re.subn(table, f"[stages.episode.{stage}]\n{body}", text)
    assert n == 1
    return new


def refused(code: int, err: str, path: Path, fix: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert str(path) in err and fix in err, err


@pytest.mark.parametrize("target", ["ewg.toml", "ewg.db", "items", "."])
def test_a_path_others_can_write_is_refused_with_the_chmod_that_fixes_it(workspace, target):
    path = (workspace.root / target).resolve()
    workspace.close()
    os.chmod(path, stat.S_IMODE(path.stat().st_mode) | stat.S_IWOTH)
    code, _out, err = ewg("--workspace", str(workspace.root), "status")
    refused(code, err, path, f"chmod go-w {path}")


def test_a_group_writable_database_wal_is_refused(workspace):
    """The -wal exists while a connection is open (here: the test's own)."""
    wal = Path(f"{workspace.store.path}-wal")
    workspace.store.read("SELECT 1")
    assert wal.exists()
    os.chmod(wal, 0o620)
    code, _out, err = ewg("--workspace", str(workspace.root), "status")
    refused(code, err, wal, f"chmod go-w {wal}")


def test_a_link_planted_as_the_database_wal_is_refused_and_its_target_untouched(workspace, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    workspace.close()
    wal = Path(f"{workspace.store.path}-wal")
    wal.unlink(missing_ok=True)
    os.symlink(victim, wal)
    code, _out, err = ewg("--workspace", str(workspace.root), "run", "--until-idle", "--quiet")
    refused(code, err, wal, f"rm {wal}")
    assert victim.read_text() == "precious\n"


def test_an_items_folder_owned_by_another_user_is_refused_with_the_chown(workspace):
    workspace.close()
    os.chown(workspace.items_root, 4242, 4242)
    code, _out, err = ewg("--workspace", str(workspace.root), "status")
    refused(code, err, workspace.items_root, f"chown root {workspace.items_root}")
    assert "uid 4242" in err


def test_a_command_stage_appended_by_another_user_never_runs(workspace, tmp_path):
    """The attack of the issue: ewg.toml left world-writable, another account appends a command stage."""
    marker = tmp_path / "ran-as-the-owner"
    cfg = workspace.root / "ewg.toml"
    workspace.close()
    cfg.write_text(
        replace_stage(cfg.read_text(), "discovered", f'kind = "command"\ncommand = ["touch", "{marker}"]\n')
    )
    os.chmod(cfg, 0o666)
    code, _out, err = ewg("--workspace", str(workspace.root), "run", "--until-idle", "--quiet")
    refused(code, err, cfg, f"chmod go-w {cfg}")
    assert not marker.exists()


def test_init_refuses_a_folder_others_can_write(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, 0o777)
    code, _out, err = ewg("init", str(folder))
    refused(code, err, folder, f"chmod go-w {folder}")
    assert list(folder.iterdir()) == []


def test_doctor_reports_what_others_can_write_and_imports_nothing_their_config_names(workspace, tmp_path):
    """An exposed ewg.toml may name any module: doctor must not import it to check the stage."""
    lib = tmp_path / "lib"
    lib.mkdir()
    marker = tmp_path / "imported"
    (lib / "planted_stage.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef run(ctx): pass\n")
    cfg = workspace.root / "ewg.toml"
    cfg.write_text(
        replace_stage(cfg.read_text(), "enriched", 'kind = "python"\ncallable = "planted_stage:run"\n')
    )
    workspace.close()
    os.chmod(cfg, 0o646)
    os.chmod(workspace.items_root, 0o770)
    proc = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", "--workspace", str(workspace.root), "doctor", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{lib}"},
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    found = [f for f in report["findings"] if f["check"] == "permissions" and f["severity"] == "error"]
    assert len(found) == 1, report["findings"]
    assert str(cfg) in found[0]["what"] and str(workspace.items_root) in found[0]["what"]
    assert f"chmod go-w {cfg}" in found[0]["fix"] and f"chmod go-w {workspace.items_root}" in found[0]["fix"]
    assert not marker.exists()


# -- links planted in the items folder ------------------------------------------------------------------
def plant_links(ctx) -> None:
    """An episode's first stage: plants links at the next stage's temporary folder and checkpoint names."""
    (ctx.output_dir / "found.txt").write_text("ok\n")
    token = int(ctx.output_path.name.rsplit("-", 1)[1])
    outside = Path(ctx.options["outside"])
    os.symlink(outside / "tmp-target", ctx.item_dir / f".tmp-transcribed-{token + 1}")
    os.symlink(outside / "checkpoint-target", ctx.item_dir / "transcribed")


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() if p.is_file() else "/" for p in folder.rglob("*")}


def outside_targets(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    for name in ("tmp-target", "checkpoint-target", "item-target"):
        (outside / name).mkdir(parents=True)
        (outside / name / "precious.txt").write_text(f"{name}\n")
    # what a sweep through a link to an item folder would take for a leftover of ewg's own
    (outside / "item-target" / ".tmp-enriched-7").mkdir()
    (outside / "item-target" / ".tmp-enriched-7" / "notes.txt").write_text("mine\n")
    return outside


def test_links_planted_at_a_temporary_and_a_checkpoint_folder_are_never_written_through(tmp_path):
    outside = outside_targets(tmp_path)
    before = snapshot(outside)
    extra = (
        f'\n[stages.episode.discovered]\nkind = "python"\ncallable = "{__name__}:plant_links"\n'
        f'[stages.episode.discovered.options]\noutside = "{outside}"\n'
    )
    ws = init_workspace(tmp_path / "ws", fast_demo_text(faults=False, extra=extra))
    try:
        add_episode(ws, "ep1", source="demo://ep1.mp4", title="one")
        eng = Engine(ws, workers=1).start()
        try:
            assert eng.run_until_idle(timeout=60)
        finally:
            eng.stop()
        row = ws.store.read_one("SELECT status, error_message FROM items WHERE id='ep1'")
        assert row["status"] == "done", row["error_message"]
        assert snapshot(outside) == before
        final = ws.item_dir("ep1") / "transcribed"
        assert not final.is_symlink() and (final / "transcribed.json").is_file()
        assert [p for p in ws.items_root.rglob("*") if p.is_symlink()] == []
        assert checkpoints.verify(final, json.loads((final / "manifest.json").read_text())) == []
    finally:
        ws.close()


def test_the_start_up_sweep_removes_planted_links_and_never_their_targets(tmp_path):
    outside = outside_targets(tmp_path)
    before = snapshot(outside)
    ws = init_workspace(tmp_path / "ws", fast_demo_text(faults=False))
    try:
        ids = seed_episodes(ws, 2)
        os.symlink(outside / "item-target", ws.item_dir(ids[0]))  # in place of an item's folder
        real = ws.item_dir(ids[1])
        real.mkdir()
        for name in (".tmp-rendered-99", ".old-editorial-3", ".failed-enriched-2", "transcribed"):
            os.symlink(outside / "tmp-target", real / name)
        eng = Engine(ws, workers=2)
        swept = eng.recover()["swept"]
        assert snapshot(outside) == before
        assert [p for p in ws.items_root.rglob("*") if p.is_symlink()] == []
        assert swept == 5
        eng.start()
        try:
            assert eng.run_until_idle(timeout=60)
        finally:
            eng.stop()
        statuses = {r["status"] for r in ws.store.read("SELECT status FROM items")}
        assert statuses == {"done"}
        assert snapshot(outside) == before
    finally:
        ws.close()


def test_a_link_in_place_of_an_item_folder_is_replaced_when_ewg_writes(tmp_path, workspace):
    """At write time (after the sweep): the attempt's folder and a checkpoint replacement land inside."""
    outside = outside_targets(tmp_path)
    item = workspace.item_dir("linked")
    os.symlink(outside / "item-target", item)
    tmp = checkpoints.temp_dir(item, "enriched", 5)
    assert not item.is_symlink() and tmp.is_dir() and not tmp.is_symlink()
    os.rmdir(tmp)
    os.rmdir(item)
    # an older checkpoint to replace, reached through a link: the rename-aside would delete the target
    os.symlink(outside / "item-target", item)
    (outside / "item-target" / "enriched").mkdir()
    before = snapshot(outside)
    checkpoints.publish(checkpoints.prepare(None, item / "enriched"), token=6)
    assert snapshot(outside) == before
    assert not item.is_symlink()


def test_doctor_reports_planted_links_and_repair_removes_only_the_links(tmp_path, workspace):
    outside = outside_targets(tmp_path)
    before = snapshot(outside)
    planted = workspace.known_ids().pop()  # in place of a known item's folder
    os.symlink(outside / "item-target", workspace.item_dir(planted))
    root = workspace.root
    workspace.close()
    code, out, err = ewg("--workspace", str(root), "doctor", "--json")
    report = json.loads(out)
    links = [f for f in report["findings"] if "symbolic link" in f["what"]]
    assert code == 1 and links and planted in links[0]["what"], err
    code, out, err = ewg("--workspace", str(root), "doctor", "--repair")
    assert code == 0, out + err
    assert not (root / "items" / planted).exists() and snapshot(outside) == before
    ws = open_workspace(root)
    try:
        assert ws.store.read_one("SELECT 1 FROM events WHERE verb='doctor_repair' AND selection='links'")
    finally:
        ws.close()


def test_clear_cache_never_deletes_through_a_link_planted_in_place_of_an_item_folder(tmp_path, workspace):
    """Planted after the start-up sweep: the verb's removal (and the engine's cache_related one) stop
    at the link."""
    from engine import ownership
    from engine.db import queries
    from engine.verbs import Operator

    outside = outside_targets(tmp_path)
    (outside / "item-target" / "cache").mkdir()
    (outside / "item-target" / "cache" / "precious.bin").write_text("not ewg's\n")
    item_id = queries.status(workspace.store)["episodes"][0]["id"]
    item = workspace.item_dir(item_id)
    if item.exists():
        ownership.remove_tree(item)
    os.symlink(outside / "item-target", item)
    before = snapshot(outside)
    Operator(workspace, actor="tester").clear_cache([item_id])
    ownership.remove_in_item(item, ["cache", ".failed-*"])  # what the runtime does on cache_related
    assert snapshot(outside) == before
