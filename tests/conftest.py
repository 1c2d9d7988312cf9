"""Shared fixtures: small, fast workspaces whose engine intervals are tuned for tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
for path in (ROOT, TESTS):  # `engine` and the test stage library (stagelib) importable everywhere
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from ewgtest import fast_demo_text  # noqa: E402

from engine.workspace import init_workspace  # noqa: E402


@pytest.fixture(autouse=True)
def _state_home(tmp_path_factory, monkeypatch):
    """A console started by a test (in-process or as `ewg` in a subprocess) keeps its first-run marker
    here, never in the tester's ~/.local/state."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-state"))


@pytest.fixture
def make_demo(tmp_path):
    """make_demo(count=3, faults=False, speed=0.05, extra="", **engine_overrides) -> Workspace"""
    made = []

    def make(
        count: int = 3,
        faults: bool = False,
        speed: float = 0.05,
        extra: str = "",
        name: str = "ws",
        **overrides: str,
    ):
        from engine.demo import seed_episodes

        ws = init_workspace(tmp_path / name, fast_demo_text(faults, speed, extra, **overrides))
        seed_episodes(ws, count)
        made.append(ws)
        return ws

    yield make
    for ws in made:
        ws.close()
