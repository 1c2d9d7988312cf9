"""The console refuses to start without a terminal, and says what to use instead."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("command", [[], ["--attach"]])
def test_the_console_into_a_pipe_exits_2_and_points_at_status(make_demo, command):
    ws = make_demo(count=1)
    proc = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", "-w", str(ws.root), *command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert b"needs a terminal" in proc.stderr and b"ewg status" in proc.stderr
    assert b"\x1b" not in proc.stdout + proc.stderr  # not one escape code written


def test_demo_without_a_terminal_writes_nothing(tmp_path):
    target = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", "demo", str(target)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2 and b"needs a terminal" in proc.stderr
    assert not target.exists()


def test_version_prints_the_installed_version_and_exits_0():
    from importlib.metadata import version

    proc = subprocess.run([sys.executable, "-m", "ewg_tui.cli", "--version"], capture_output=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.decode().strip() == f"ewg {version('ewg-tui')}"
