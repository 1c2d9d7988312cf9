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

from ewgtest import fast_demo_text, pg_database  # noqa: E402

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


@pytest.fixture
def pg_url():
    """A fresh, empty PostgreSQL database for one test (ewgtest.pg_database)."""
    with pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    """Run a test once per database driver: the contract every driver must keep."""
    return request.param


@pytest.fixture
def any_workspace(backend, tmp_path, request, monkeypatch):
    """init_workspace(...) -> Workspace on the backend under test (PostgreSQL through EWG_DATABASE_URL)."""
    if backend == "postgresql":
        monkeypatch.setenv("EWG_DATABASE_URL", request.getfixturevalue("pg_url"))
    else:
        monkeypatch.delenv("EWG_DATABASE_URL", raising=False)
    made = []

    def make(text: str | None = None, root=None):
        ws = init_workspace(root or tmp_path / "ws", **({"config_text": text} if text else {}))
        made.append(ws)
        return ws

    yield make
    for ws in made:
        ws.close()
