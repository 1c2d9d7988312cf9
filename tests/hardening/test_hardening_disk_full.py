"""A real full disk, with the database on the same volume (the default layout): a small tmpfs.

Needs root to mount; CI runs as root. Skipped elsewhere with the reason said.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from ewgtest import fast_demo_text

from engine.db import queries
from engine.runtime import Engine
from engine.workspace import init_workspace, open_workspace

pytestmark = pytest.mark.slow


@pytest.fixture
def small_volume(tmp_path):
    mount = tmp_path / "vol"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(filler: Path, leave_kb: int) -> Path:
    """Grow `filler` (made before the workspace, so making it cannot itself meet a full disk) until
    `leave_kb` remain; a write refused by the full volume ends the filling, it is not an error."""
    folder = filler.parent
    with contextlib.suppress(OSError), open(filler, "ab", buffering=0) as f:
        while os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize > leave_kb * 1024:
            f.write(b"\0" * 65536)
    return filler


def test_a_full_database_disk_pauses_claiming_says_so_and_loses_nothing(small_volume, caplog):
    filler = small_volume / f"filler-{uuid.uuid4().hex}"
    filler.touch()
    root = small_volume / "ws"
    text = fast_demo_text(faults=False, disk_critical_free_mb="0", disk_warn_free_mb="0", interval="0.2")
    ws = init_workspace(root, text)
    from engine.demo import seed_episodes

    seed_episodes(ws, 6)
    caplog.set_level(logging.ERROR)
    eng = Engine(ws, workers=2).start()
    try:
        fill(filler, leave_kb=16)  # the engine runs when the disk fills up under it
        time.sleep(4)  # the disk is full: every write fails for these seconds
        tracebacks = sum(1 for r in caplog.records if r.exc_info)
        assert tracebacks <= 5, f"{tracebacks} tracebacks in 4 s"
        assert eng.health.resource_pause, "claiming must pause on SQLITE_FULL"
        proc = subprocess.run(
            [sys.executable, "-m", "ewg_tui.cli", "--workspace", str(root), "--readonly", "status"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "not claiming work" in proc.stdout or "not claiming work" in proc.stderr, (
            proc.stdout + proc.stderr
        )
        filler.unlink()  # space returns
        assert eng.run_until_idle(timeout=60)
    finally:
        eng.stop()
        ws.close()
    ws = open_workspace(root)
    try:
        counts = queries.counts(ws.store)["episode"]
        assert counts["total"] == 6 and counts["by_status"]["done"] == 6
    finally:
        ws.close()
