"""The built-in demo workspaces.

`create_media_demo` (what `ewg demo` makes): real, tiny video files made with
PyAV in show folders, found by the scanner and processed by the real AI-EWG
stages, with bad inputs (truncated, empty, no captions, still copying) and a
fault script (transient, hang, disk full, slow) so every recovery road shows
within the first minute. `create_demo`: the same roads on simulated stages
with configurable durations, for tests and for machines without media.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from . import ownership
from .clock import Clock
from .config import ConfigError
from .db import DatabaseError, faults
from .db.queries import overview
from .workspace import DEFAULT_TOML, Workspace, add_episode, init_workspace, open_workspace

SHOWS = ("Tech Talk Weekly", "Morning Brief", "Founders Hour", "Data Night", "City Council Live")
TOPICS = (
    "Open-source AI",
    "Local elections",
    "Battery recycling",
    "Remote work",
    "Quantum hype",
    "Urban cycling",
    "Chip supply",
    "Privacy law",
    "Solar farms",
    "Podcast economics",
)

# Stage durations (seconds) of the demo pipeline: short enough to watch.
EPISODE_DURATIONS = {
    "discovered": 1.0,
    "transcribed": 4.0,
    "enriched": 3.0,
    "editorial": 2.0,
    "rendered": 2.0,
}
CLIP_DURATIONS = {"generated": 3.0, "rendered": 2.0}

# One fault of every kind; numbers are episode numbers.
FAULTS = """
[[demo.faults]]
item = 3
stage = "transcribed"
fault = "transient"
times = 2

[[demo.faults]]
item = 5
stage = "enriched"
fault = "hang"

[[demo.faults]]
item = 7
stage = "discovered"
fault = "persistent"

[[demo.faults]]
item = 2
stage = "rendered"
fault = "disk_full"

[[demo.faults]]
item = 4
stage = "editorial"
fault = "cache"

[[demo.faults]]
item = 6
stage = "transcribed"
fault = "slow"

[[demo.faults]]
item = 8
stage = "enriched"
fault = "missing_dependency"

[[demo.faults]]
item = 1
kind = "clip"
stage = "generated"
fault = "transient"
"""


def set_key(text: str, key: str, value: str) -> str:
    pattern = re.compile(rf"^{key} = [^#\n]*?(\s*#.*)?$", re.MULTILINE)
    new, n = pattern.subn(lambda m: f"{key} = {value}{m.group(1) or ''}", text, count=1)
    if n != 1:
        raise KeyError(key)
    return new


def demo_config(faults: bool = True, speed: float = 1.0, seed: int = 7) -> str:
    """The default configuration tuned for watching recovery happen: short waits, small thresholds."""
    text = DEFAULT_TOML
    text = set_key(text, "stall_after", "6.0")
    text = set_key(text, "dead_after", "5.0")  # below stall_after, as engine.config requires
    text = set_key(text, "base_delay", "2.0")
    text = set_key(text, "max_delay", "10.0")
    text = set_key(text, "episode_processing", "60.0")
    text = set_key(text, "clip_generation", "30.0")
    text = set_key(text, "stop_grace", "3.0")
    text = set_key(text, "force_grace", "1.0")
    text += "\n# The demo pipeline: every stage is simulated; faults are injected by script.\n"
    for kind, durations in (("episode", EPISODE_DURATIONS), ("clip", CLIP_DURATIONS)):
        for stage, seconds in durations.items():
            text += f'\n[stages.{kind}.{stage}]\nkind = "demo"\nduration = {seconds * speed}\n'
    text += f"\n[demo]\nseed = {seed}\ntransient_probability = 0.0\n"
    if faults:
        text += FAULTS
    return text


def episode_id(show: str, number: int, date: str = "2026-11-29") -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", show.lower()).strip("_")
    return f"{slug}_ep{number:03d}_{date}"


def seed_episodes(ws: Workspace, count: int, start: int = 1) -> list[str]:
    ids = []
    for n in range(start, start + count):
        show = SHOWS[(n - 1) % len(SHOWS)]
        topic = TOPICS[(n - 1) % len(TOPICS)]
        item_id = episode_id(show, n)
        add_episode(
            ws,
            item_id,
            source=f"demo://{show}/episode-{n:03d}.mp4",
            show=show,
            title=f"{topic} (part {1 + (n - 1) // len(TOPICS)})",
        )
        ids.append(item_id)
    return ids


def create_demo(
    root: Path,
    count: int = 10,
    faults: bool = True,
    speed: float = 1.0,
    clock: Clock | None = None,
    database: str | None = None,
) -> Workspace:
    ws = init_workspace(root, demo_config(faults=faults, speed=speed), clock=clock, database=database)
    ownership.mark_demo(ws.root, ws.store.identity())
    seed_episodes(ws, count)
    return ws


def media_demo_config(episodes: list[dict], faults: bool = True, pace: float = 1.5, seed: int = 7) -> str:
    """Real stages on demo media; the fault script names items by id."""
    text = DEFAULT_TOML
    for key, value in (
        ("stall_after", "8.0"),
        ("dead_after", "5.0"),  # below stall_after, as engine.config requires
        ("base_delay", "2.0"),
        ("max_delay", "10.0"),
        ("episode_processing", "120.0"),
        ("clip_generation", "60.0"),
        ("stop_grace", "3.0"),
        ("force_grace", "1.0"),
    ):
        text = set_key(text, key, value)
    text += """
# Demo: source folders with generated media, processed by the built-in stages.
[sources]
root = "sources"          # one sub-folder per show
stable_seconds = 20.0     # a file must keep its size and mtime this long before it is taken
scan_interval = 5.0

[stages.episode.editorial.options]
min_clip_seconds = 1.0    # the demo episodes are four seconds long
max_clip_seconds = 2.5
max_clips = 2
"""
    text += f"\n[demo]\nseed = {seed}\npace = {pace}          # seconds each stage takes at least, to be watchable\n"
    ok = [e["id"] for e in episodes if e["expectation"] == "ok"]
    script = [
        ("transient", "transcribed", 2, "episode"),
        ("hang", "enriched", 1, "episode"),
        ("disk_full", "rendered", 1, "episode"),
        ("slow", "editorial", 1, "episode"),
        ("transient", "generated", 1, "clip"),
    ]
    if faults:
        for item_id, (fault, stage, times, kind) in zip(ok, script):
            text += (
                f'\n[[demo.faults]]\nitem = "{item_id}"\nkind = "{kind}"\nstage = "{stage}"\n'
                f'fault = "{fault}"\ntimes = {times}\n'
            )
    return text


def create_media_demo(
    root: Path,
    count: int = 6,
    faults: bool = True,
    pace: float = 1.5,
    clock: Clock | None = None,
    database: str | None = None,
) -> Workspace:
    """A workspace of real demo media, scanned once so its episodes are there from the start."""
    from .intake import scan_once
    from .media.demo_media import generate_demo_media

    root = Path(root)
    episodes = generate_demo_media(root / "sources", count, seed=7)
    ws = init_workspace(
        root, media_demo_config(episodes, faults=faults, pace=pace), clock=clock, database=database
    )
    ownership.mark_demo(ws.root, ws.store.identity())
    scan_once(ws)
    return ws


def why_not_replaceable(root: Path) -> str | None:
    """Why `ewg demo` may not replace the folder `root` (None: ewg made it as a demo, and its marker
    `.ewg-demo` names the database that is there now, and no engine runs on it). Reads only; what is in
    ewg.toml proves nothing."""
    marker = ownership.demo_marker(root)
    if marker is None:
        return f"it has no {ownership.DEMO_MARKER} marker, which `ewg demo` writes into the folders it makes"
    if not marker:
        return f"its {ownership.DEMO_MARKER} is not a marker ewg wrote"
    try:
        ws = open_workspace(root, readonly=True)
    except (ConfigError, DatabaseError) as exc:
        return f"its database cannot be read to check the marker ({str(exc).split('. ')[0]})"
    try:
        identity = ws.store.identity()
        engines = overview(ws.store, time.time()).engines
    except (DatabaseError, *faults.driver_errors()):
        identity, engines = "", []
    finally:
        ws.close()
    if identity != marker:
        return f"its {ownership.DEMO_MARKER} marker names another database than the one in it"
    if engines:
        return f"an engine is running on it (pid {engines[0]['pid']}); stop it first"
    return None
