"""Shared fixtures: small, fast workspaces whose engine intervals are tuned for tests."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
for path in (ROOT, TESTS):          # `engine` and the test stage library (stagelib) importable everywhere
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from engine.demo import create_demo, demo_config, set_key  # noqa: E402
from engine.workspace import init_workspace  # noqa: E402

FAST = {
    "heartbeat_interval": "0.2", "dead_after": "1.5", "check_interval": "0.2", "poll_interval": "0.05",
    "stall_after": "1.0", "base_delay": "0.1", "max_delay": "0.5", "stop_grace": "1.0", "force_grace": "0.5",
    "interval": "0.3", "backup_interval": "0",
}


def fast_config(text: str, **overrides: str) -> str:
    for key, value in {**FAST, **overrides}.items():
        text = set_key(text, key, value)
    return text


def fast_demo_text(faults: bool = True, speed: float = 0.05, extra: str = "", **overrides: str) -> str:
    """The demo configuration made fast; a [stages.K.S] table in `extra` replaces the demo's own."""
    text = fast_config(demo_config(faults=faults, speed=speed), **overrides)
    for header in re.findall(r"^\[stages\.\w+\.\w+\]$", extra, flags=re.M):
        text = re.sub(re.escape(header) + r"\nkind = \"demo\"\nduration = [^\n]*\n", "", text)
    return text + extra


@pytest.fixture
def make_demo(tmp_path):
    """make_demo(count=3, faults=False, speed=0.05, extra="", **engine_overrides) -> Workspace"""
    made = []

    def make(count: int = 3, faults: bool = False, speed: float = 0.05, extra: str = "", name: str = "ws",
             **overrides: str):
        from engine.demo import seed_episodes
        ws = init_workspace(tmp_path / name, fast_demo_text(faults, speed, extra, **overrides))
        seed_episodes(ws, count)
        made.append(ws)
        return ws

    yield make
    for ws in made:
        ws.close()


__all__ = ["create_demo", "fast_config", "fast_demo_text"]
