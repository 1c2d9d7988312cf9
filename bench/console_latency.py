"""Console latency: first paint, keypress-to-repaint and idle CPU with 100k episodes and a busy engine.

    .venv/bin/python bench/console_latency.py [--episodes 100000] [--presses 300] [--idle 10]

Issue 3, "Quality": with 100k episodes in the workspace and the engine busy,
measure time to first paint, keypress-to-repaint latency (p50/p95/p99) and
idle CPU. Targets: first paint under 1 s, p95 under 100 ms (aim for 50).

Setup (not timed). A workspace from `init_workspace(demo_config(faults=False,
speed=0.05))`: the demo stages take 50-200 ms, so two workers finish several
stages a second. N episodes are inserted in one `executemany` with a fixed
random mix: ~55% done, ~25% queued at various stages, ~8% failed (error class,
message, suggestion, one failed attempt row), ~6% retrying (next_attempt_at in
the future), ~3% stopped, ~2% blocked (a service down), ~0.1% running (a lease held
by an engine on another host, some flagged STALLED; the bench heartbeats those leases
through the run, as that engine would). The engine then runs in a separate
process (`python -m ewg_tui.cli -w WS run --quiet`, 2 workers) for the whole
benchmark, so the 25k queued episodes keep it claiming, heartbeating and
committing while the console reads. Its executions during the run are reported.
With `--engine console` the engine runs inside the console instead (2 workers,
as plain `ewg` runs it): its threads then share the console's interpreter, and
the idle CPU figure includes the engine's own work.
With `--media N` the engine works on N real episodes instead of demo stages: a
720p H.264 source with captions (generated, then remuxed N times so each copy is
its own content), run through the built-in stages (probe, captions transcript,
enrichment, editorial, page, and two clips an episode cut and rendered in 16:9
and 9:16). The 100k filler episodes are then not claimable (their queued share
is stopped), so every core goes to real media work, as on a box that renders
clips. The machine's load average is sampled through the run and printed
beside the figures.

What is measured.

1. In-process, headless (`EwgApp(ws).run_test(size=(120, 40))`, attached: no
   engine in the app, as `ewg --attach`; the workspace is opened with
   `open_workspace`, as `run_console` does). A hook on `MainScreen._compositor_refresh`
   (Textual calls it for every frame it composes; headless only skips writing the
   frame to a terminal) checks, right after each composed frame, whether the frame
   shows what was asked for.
   * first paint: from constructing the app until the first frame that holds
     episode rows (`--starts` cold app starts in this process; Python imports are
     already done).
   * keypress-to-repaint: a Key event is sent through the driver, as a terminal
     would (`driver.send_message`), and the clock stops at the first composed frame
     that shows the key's effect: the cursor row and window offset the key leads to
     (j/k inside the window, or the window slid by one row at its edge; pagedown,
     pageup, G, g slide the window in SQL), for `/` the open filter bar, for each
     typed filter character the episode table titled with that filter (the rows of
     the new filter are in), or the bar's red "invalid" state when the text does not
     parse yet (`status:f`), and for esc the unfiltered table. Keys are pressed one
     at a time, `--gap` seconds after the previous one was shown.
   * where the time goes: every read the console's poll worker makes is timed
     (`read_view`, and inside it `queries.count_items`, `item_window`, `text_window_head`, `counts`,
     `overview`).
2. A real pseudo-terminal (120x40, TERM=xterm-256color): the console as an
   operator starts it, `python -m ewg_tui.cli -w WS --attach`, in its own process.
   * first paint (cold): from spawning the process until the terminal output holds
     the table title of the first window ("Episodes 1-"): includes Python start,
     imports and opening the workspace.
   * idle CPU: the console process's user+system CPU time (psutil, all its
     threads) over `--idle` seconds with no key pressed, after 2 s of settling;
     the engine is the other process and is not counted. The bytes the console
     wrote to the terminal meanwhile are reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import platform
import random
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import unicodedata
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from engine import errors, pipeline  # noqa: E402
from engine.db import queries  # noqa: E402
from engine.demo import SHOWS, TOPICS, demo_config, episode_id  # noqa: E402
from engine.health import SERVICE_PREFIX  # noqa: E402
from engine.workspace import init_workspace, open_workspace  # noqa: E402

TARGET_FIRST_PAINT = 1.0  # s
TARGET_P95 = 0.100  # s
AIM_P95 = 0.050  # s
SIZE = (120, 40)

FOREIGN_OWNER = "bench-other-host:777:1794999000"
MESSAGES = {
    errors.TRANSIENT: [
        "connection to transcription service timed out",
        "render farm returned 503",
        "llm endpoint reset the connection",
    ],
    errors.PERSISTENT: [
        "corrupt source: no readable video stream",
        "audio track is empty",
        "captions file is not valid UTF-8",
    ],
    errors.MISSING_DEPENDENCY: ["the enrichment model 'llama3' is not installed", "ffmpeg not found on PATH"],
    errors.RESOURCE: ["no space left on device", "CUDA out of memory"],
    errors.CONFIG_ERROR: ["stages.episode.rendered.command refers to a missing preset"],
    errors.CACHE_RELATED: ["cached transcript does not match the source checksum"],
}


# -- the workspace ----------------------------------------------------------------------------
def build_workspace(root: Path, episodes: int, seed: int = 7, media: int = 0) -> dict:
    """A workspace with `episodes` episodes in a realistic mix of states; returns counts by status.

    With `media`, the stages are the built-in ones and the queued fillers are stopped instead (their
    `demo://` sources are not files): the engine's work is the real episodes `add_media` adds."""
    ws = init_workspace(root, media_config() if media else demo_config(faults=False, speed=0.05))
    now = time.time()
    rng = random.Random(seed)
    stages = list(pipeline.EPISODE_STAGES)
    items, attempts = [], []
    by_status: dict[str, int] = defaultdict(int)
    for n in range(1, episodes + 1):
        show = SHOWS[(n - 1) % len(SHOWS)]
        day = 1 + (n * 7919) % 28
        item_id = episode_id(show, n, f"2026-{1 + n % 12:02d}-{day:02d}")
        roll = rng.random()
        row = dict(
            id=item_id,
            kind=pipeline.EPISODE,
            parent_id=None,
            source=f"demo://{show}/episode-{n:06d}.mp4",
            show=show,
            title=f"{TOPICS[(n - 1) % len(TOPICS)]} (part {1 + (n - 1) // len(TOPICS)})",
            stage=None,
            next_stage="discovered",
            target_stage=stages[-1],
            status="queued",
            progress=0.0,
            progress_message="",
            heartbeat_at=None,
            progress_at=None,
            started_at=None,
            lease_owner=None,
            lease_token=0,
            lease_expires_at=None,
            attempts=0,
            next_attempt_at=now - rng.uniform(0, 86400),
            error_class=None,
            error_message=None,
            error_suggestion=None,
            error_at=None,
            verdict=None,
            blocked_reason=None,
            created_at=now - 86400 * 30 + n,
            updated_at=now - rng.uniform(0, 86400),
        )
        done_upto = rng.randrange(0, len(stages))  # index of the stage the item is working on
        row["stage"] = stages[done_upto - 1] if done_upto else None
        row["next_stage"] = stages[done_upto]
        if roll < 0.55:
            row.update(status="done", stage=stages[-1], next_stage=None, progress=1.0)
        elif roll < 0.80:
            if media:
                row.update(status="stopped")
        elif roll < 0.94:
            failed = roll < 0.88
            cls = rng.choice(list(MESSAGES)) if failed else errors.TRANSIENT
            number = 3 if failed else rng.randint(1, 2)
            message = rng.choice(MESSAGES[cls]) + f" ({item_id[:12]}, attempt {number})"
            row.update(
                status="failed" if failed else "retrying",
                attempts=number,
                error_class=cls,
                error_message=message,
                error_suggestion=errors.SUGGESTIONS.get(cls),
                error_at=now - rng.uniform(0, 3600),
                next_attempt_at=(now + rng.uniform(5, 3600) + (30 * 86400 if media else 0))
                if not failed
                else row["next_attempt_at"],  # with media, no filler retry comes due during the run
            )
            started = row["error_at"] - rng.uniform(1, 60)
            attempts.append(
                (
                    item_id,
                    row["next_stage"],
                    number,
                    FOREIGN_OWNER,
                    number,
                    started,
                    row["error_at"],
                    "failed",
                    cls,
                    message,
                    f"working on {row['next_stage']}\nerror: {message}",
                    row["error_at"] - started,
                )
            )
        elif roll < 0.97:
            row.update(status="stopped", progress=rng.random())
        elif roll < 0.99:
            # The engine's own wording for a service that is down: any other reason is a resource
            # block, which every health sample puts back in the queue (with --media, those fillers
            # then ran the built-in stages on demo:// sources and failed at once, over and over).
            row.update(status="blocked", blocked_reason=f"{SERVICE_PREFIX}llm is down (connection refused)")
        elif roll < 0.991:
            row.update(
                status="running",
                progress=rng.random(),
                progress_message="working",
                started_at=now - 60,
                heartbeat_at=now,
                progress_at=now - rng.uniform(0, 30),
                lease_owner=FOREIGN_OWNER,
                lease_token=1,
                lease_expires_at=now + 3600,
                verdict="STALLED" if rng.random() < 0.1 else None,
            )
        elif media:
            row.update(status="stopped")
        by_status[row["status"]] += 1
        items.append(row)
    columns = list(items[0])
    with ws.store.write() as conn:
        conn.executemany(
            f"INSERT INTO items ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [tuple(r[c] for c in columns) for r in items],
        )
        conn.executemany(
            "INSERT INTO attempts (item_id, stage, number, worker, lease_token, started_at, ended_at,"
            " outcome, error_class, error_message, log_tail, duration, spent)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,1)",
            attempts,
        )
    ws.close()
    return dict(by_status)


def media_config() -> str:
    from engine.demo import media_demo_config

    text = media_demo_config([], faults=False, pace=0.0)
    text = text.replace("stable_seconds = 20.0", "stable_seconds = 0.0")
    text = text.replace("min_clip_seconds = 1.0", "min_clip_seconds = 8.0")
    text = text.replace("max_clip_seconds = 2.5", "max_clip_seconds = 20.0")
    return text


def add_media(root: Path, count: int, seconds: float) -> float:
    """`count` real 720p episodes with captions, scanned in; returns the seconds it took."""
    import av

    from engine.intake import scan_once
    from engine.media.demo_media import write_test_video

    t = time.perf_counter()
    folder = root / "sources" / SHOWS[0]
    folder.mkdir(parents=True, exist_ok=True)
    template = root / "template.mp4"
    write_test_video(template, seconds, seed=11, width=1280, height=720)
    from engine.media.demo_media import speech_segments, to_srt

    captions = to_srt(speech_segments(seconds, random.Random(11)))
    for n in range(1, count + 1):
        target = folder / f"Episode {n:03d} - Rendering Under Load.mp4"
        with av.open(str(template)) as src, av.open(str(target), "w", format="mp4") as out:
            out.metadata["title"] = f"bench copy {n}"  # its own bytes: the intake dedups by content
            streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
            for packet in src.demux():
                if packet.dts is None:
                    continue
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
        target.with_suffix(".srt").write_text(captions, encoding="utf-8")
        past = time.time() - 3600
        os.utime(target, (past, past))
    template.unlink()
    ws = open_workspace(root)
    try:
        scan_once(ws)
    finally:
        ws.close()
    return time.perf_counter() - t


class LoadSampler:
    """The 1-minute load average, sampled every 2 s while the benchmark runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(2.0):
            self.samples.append(os.getloadavg()[0])

    def start(self) -> LoadSampler:
        self._thread.start()
        return self

    def stop(self) -> str:
        self._stop.set()
        self._thread.join(5)
        if not self.samples:
            return f"{os.getloadavg()[0]:.1f}"
        return f"{sum(self.samples) / len(self.samples):.1f} mean, {max(self.samples):.1f} max"


FOREIGN_BEATS = """
import sqlite3, sys, time
path, owner, progress = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
db = sqlite3.connect(path, timeout=10)
extra = ", progress_at=?, started_at=?" if progress else ""
while True:
    now = time.time()
    with db:
        db.execute(
            f"UPDATE items SET heartbeat_at=?, lease_expires_at=?{extra} WHERE lease_owner=? AND status='running'",
            (now, now + 3600, *((now, now - 60) if progress else ()), owner),
        )
    time.sleep(2.0)
"""


class ForeignEngine:
    """The other host's engine that holds the ~100 running fillers: a process of its own that heartbeats
    their leases every 2 s, as a live engine does. Without it their heartbeats went stale after
    `dead_after` (10 s), the watchdog rescued them and this run's engine ran them (with --media: the
    built-in stages on `demo://` sources, failing at once).

    Its own process, not a thread of the bench: POSIX locks belong to a process, and the bench opens
    workspaces (whose database check opens and closes the file), which would drop a connection's locks
    held in this process; most likely a checkpoint elsewhere then reset the WAL under it ("database
    disk image is malformed", seen twice; not since)."""

    def __init__(self, root: Path, progress: bool = False) -> None:
        self.root = root
        # With --media the built-in stages' policies enforce stall and timeout limits: a lease that
        # makes no progress is cancelled and the item queued again. There the other engine reports
        # progress too, so its items stay its own (without --media some show STALLED, as meant).
        self.progress = progress
        self._proc: subprocess.Popen | None = None

    def start(self) -> ForeignEngine:
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                FOREIGN_BEATS,
                str(self.root / "ewg.db"),
                FOREIGN_OWNER,
                "1" if self.progress else "0",
            ],
            start_new_session=True,
        )
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def start_engine(root: Path, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ewg_tui.cli", "-w", str(root), "run", "--quiet", "--workers", "2"],
        cwd=REPO,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    db = sqlite3.connect(root / "ewg.db", timeout=10)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the engine exited with {proc.returncode}; see {log}")
            busy = db.execute(
                "SELECT COUNT(*) FROM items WHERE status='running' AND lease_owner != ?", (FOREIGN_OWNER,)
            ).fetchone()[0]  # its first claim (attempt rows come at the end)
            if busy:
                return proc
            time.sleep(0.1)
    finally:
        db.close()
    raise SystemExit(f"the engine did not start working within 30 s; see {log}")


def engine_executions(root: Path) -> int:
    db = sqlite3.connect(root / "ewg.db", timeout=10)
    try:
        return db.execute(
            "SELECT COUNT(*) FROM attempts WHERE worker != ? AND ended_at IS NOT NULL", (FOREIGN_OWNER,)
        ).fetchone()[0]
    finally:
        db.close()


def filler_executions(root: Path) -> int:
    """Attempts this run's engine made on the 100k filler episodes (their sources are `demo://` names).
    With --media there must be none: every core is meant for the real episodes."""
    db = sqlite3.connect(root / "ewg.db", timeout=10)
    try:
        return db.execute(
            "SELECT COUNT(*) FROM attempts JOIN items ON items.id = attempts.item_id"
            " WHERE attempts.worker != ? AND items.source LIKE 'demo://%'",
            (FOREIGN_OWNER,),
        ).fetchone()[0]
    finally:
        db.close()


# -- timing the reads ---------------------------------------------------------------------------
class ReadTimes:
    """Wraps the console's read path (module attributes) and records durations per label."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()

    def _add(self, label: str, seconds: float) -> None:
        with self._lock:
            self.times[label].append(seconds)

    def install(self) -> None:
        from ewg_tui.screens import main as main_mod
        from ewg_tui.screens import view_reader

        def flt_label(flt) -> str:
            if flt.kind == pipeline.CLIP:
                return "clips"
            if flt.text:
                return "episodes, text filter"
            if flt.statuses or flt.stage or flt.show or flt.stuck_only:
                return "episodes, field filter"
            return "episodes, unfiltered"

        def wrap(fn, label):
            def timed(*a, **kw):
                t = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    self._add(label(a, kw), time.perf_counter() - t)

            return timed

        original_read = main_mod.read_view
        main_mod.read_view = wrap(original_read, lambda a, kw: "read_view (whole poll read)")
        q_count, q_window = queries.count_items, queries.item_window

        class Q:  # view_reader's `queries`, with timed functions
            def __getattr__(self, name):
                return getattr(queries, name)

        proxy = Q()
        proxy.count_items = wrap(q_count, lambda a, kw: f"count_items ({flt_label(a[1])})")

        def window_label(a, kw):
            offset = a[4] if len(a) > 4 else kw.get("offset", 0)
            deep = " deep (offset > 1000)" if offset > 1000 else ""
            return f"item_window ({flt_label(a[1])}){deep}"

        proxy.item_window = wrap(q_window, window_label)
        proxy.text_window_head = wrap(
            queries.text_window_head, lambda a, kw: "text_window_head (before the count)"
        )
        proxy.counts = wrap(queries.counts, lambda a, kw: "counts (with overview)")
        proxy.overview = wrap(queries.overview, lambda a, kw: "overview")
        view_reader.queries = proxy


# -- the in-process (headless) part ----------------------------------------------------------
class FrameProbe:
    """After every frame the main screen composes, check whether it shows what a waiter wants."""

    def __init__(self) -> None:
        self.waiter = None
        self.frames = 0

    def install(self) -> None:
        from textual.screen import Screen

        from ewg_tui.screens.main import MainScreen

        original = Screen._compositor_refresh
        probe = self

        def hooked(screen) -> None:
            original(screen)
            probe.frames += 1
            waiter = probe.waiter
            if waiter is None:
                return
            predicate, future = waiter
            try:
                shown = predicate(screen)
            except Exception:  # noqa: BLE001 - a widget not mounted yet
                shown = False
            if shown and not future.done():
                probe.waiter = None
                future.set_result(time.perf_counter())

        MainScreen._compositor_refresh = hooked

    def expect(self, predicate) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.waiter = (predicate, future)
        return future


def key_event(key: str):
    from textual import events
    from textual.keys import _character_to_key, _get_unicode_name_from_key

    name = _character_to_key(key) if len(key) == 1 and not key.isalnum() else key
    try:
        char = unicodedata.lookup(_get_unicode_name_from_key(name))
    except KeyError:
        char = name if len(name) == 1 else None
    return events.Key(name, char)


def press_script(presses: int) -> list[str]:
    cycle = (
        ["j"] * 25
        + ["pagedown"] * 4
        + ["k"] * 8
        + ["pageup"] * 2
        + ["G"]
        + ["k"] * 5
        + ["j"] * 3
        + ["g"]
        + ["/", *"night", "escape"]
        + ["/", *"status:failed", "escape"]
    )
    keys: list[str] = []
    while len(keys) < presses:
        keys += cycle
    return keys[:presses] if keys[presses - 1 : presses] != ["/"] else keys[: presses - 1]


def expectation(screen, key: str, total: int):
    """(category, predicate over the screen) for the frame that shows `key`'s effect, or None for a no-op."""
    from ewg_tui.widgets.filter_bar import FilterBar, FilterError, parse_filter

    table = screen.episodes
    bar = screen.query_one(FilterBar)
    o, c, n, size = table.window_offset, table.cursor_row, len(table.order), table.window_size

    def at(offset, cursor):
        return lambda s: (s.episodes.window_offset, s.episodes.cursor_row) == (offset, cursor)

    if bar.has_focus:
        if key == "escape":
            return (
                "esc (clear filter)",
                lambda s: not bar.has_class("-active") and "filter:" not in s.episodes.border_title,
            )
        text = bar.value + key
        try:
            parse_filter(text)
        except FilterError:
            return "filter typing (invalid so far)", lambda s: bar.value == text and bar.has_class("-invalid")
        return "filter typing (new rows)", lambda s: s.episodes.border_title.endswith(
            f"filter: {text.strip()}"
        )
    if key == "/":
        return "/ (open filter)", lambda s: bar.has_class("-active") and bar.has_focus
    if key == "j":
        if c < n - 1:
            return "j/k in window", at(o, c + 1)
        return ("j/k window slide", at(o + 1, c)) if o + n < total else None
    if key == "k":
        if c > 0:
            return "j/k in window", at(o, c - 1)
        return ("j/k window slide", at(o - 1, c)) if o > 0 else None
    if key == "pagedown":
        return ("pagedown/pageup", at(min(o + size, total - size), c)) if o + n < total else None
    if key == "pageup":
        return ("pagedown/pageup", at(max(0, o - size), c)) if o > 0 else None
    if key == "G":
        if o + n >= total:
            return None
        return (
            "G/g",
            lambda s: (
                s.episodes.window_offset == total - size
                and s.episodes.cursor_row == len(s.episodes.order) - 1
            ),
        )
    if key == "g":
        return ("G/g", at(0, 0)) if (o or c) else None
    raise ValueError(key)


async def headless(root: Path, args, total: int) -> dict:
    from engine.runtime import Engine
    from ewg_tui import heap
    from ewg_tui.app import EwgApp
    from ewg_tui.screens.main import MainScreen

    probe = FrameProbe()
    probe.install()
    out: dict = {"first_paint": [], "presses": defaultdict(list), "timeouts": defaultdict(int), "skipped": 0}

    for start in range(args.starts + 1):
        t0 = time.perf_counter()
        ws = open_workspace(root)
        t_open = time.perf_counter() - t0
        engine = Engine(ws, workers=2) if args.engine == "console" and start == 0 else None
        app = EwgApp(ws, engine=engine, poll_interval=0.25, cursor_blink=False)
        first = None
        try:
            if engine is not None:  # as `run_console` does
                engine.on_event = app.engine_event
                engine.start()
            async with app.run_test(size=SIZE) as pilot:
                while not isinstance(app.screen, MainScreen):
                    await asyncio.sleep(0.001)
                future = probe.expect(lambda s: len(s.episodes.order) > 0)
                first = await asyncio.wait_for(future, 20) - t0
                if start == 0:  # as run_console does once its first window is drawn
                    heap.settle()
                    app.heap.enable()
                if start == 0:
                    out["open_workspace"] = t_open
                    out["window_size"] = app.screen.episodes.window_size
                    await asyncio.sleep(1.0)  # let the first overview read and the detail read land
                    await press_keys(app, probe, args, total, out)
                await pilot.pause()
        finally:
            app.heap.disable()
            if engine is not None:
                engine.stop()
            ws.close()
        if start or args.starts == 0:
            out["first_paint"].append(first)
        else:
            out["first_paint_first"] = first  # the very first start pays for lazy imports, reported apart
    out["first_paint_first"] = out.get("first_paint_first")
    return out


async def heavy_work_started(root: Path, timeout: float = 180.0) -> float:
    """Wait until a clip is being cut or rendered (the heaviest stages): the presses then meet them."""
    t = time.perf_counter()
    db = sqlite3.connect(f"file:{root / 'ewg.db'}?mode=ro", uri=True, timeout=10)
    try:
        while time.perf_counter() - t < timeout:
            running = db.execute(
                "SELECT COUNT(*) FROM items WHERE kind='clip' AND status='running'"
            ).fetchone()
            if running[0]:
                return time.perf_counter() - t
            await asyncio.sleep(0.25)
    finally:
        db.close()
    raise SystemExit(f"no clip stage started within {timeout:.0f} s: the media work is not running")


class Collections:
    """The garbage collector's passes of generation 1 and 2 (start, end), to tell a slow press
    that waited for one from one that waited for something else."""

    def __init__(self) -> None:
        self.passes: list[tuple[float, float, int]] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        elif info["generation"] >= 1:
            self.passes.append((self._start, time.perf_counter(), info["generation"]))

    def during(self, t0: float, t1: float) -> float:
        """Seconds of collection inside [t0, t1]."""
        return sum(max(0.0, min(t1, b) - max(t0, a)) for a, b, _ in self.passes)


SLOW_PRESS = 0.100  # a press slower than this is listed with what was going on


async def press_keys(app, probe: FrameProbe, args, total: int, out: dict) -> None:
    import gc

    screen = app.screen
    driver = app._driver
    if args.media:
        out["waited_for_media"] = await heavy_work_started(app.ws.root)
    collections = Collections()
    gc.callbacks.append(collections)
    slow: list[tuple[str, float, float]] = []
    try:
        await _press(app, screen, driver, probe, args, total, out, collections, slow)
    finally:
        gc.callbacks.remove(collections)
    out["slow"] = slow
    out["gc_passes"] = len(collections.passes)
    out["gc_by_generation"] = {
        g: (len(d), max(d)) for g in (1, 2) if (d := [b - a for a, b, gen in collections.passes if gen == g])
    }


async def _press(app, screen, driver, probe, args, total, out, collections, slow) -> None:
    for key in press_script(args.presses):
        await asyncio.sleep(args.gap)
        expected = expectation(screen, key, total)
        if expected is None:
            out["skipped"] += 1
            continue
        category, predicate = expected
        future = probe.expect(predicate)
        event = key_event(key)
        event.set_sender(app)
        t0 = time.perf_counter()
        driver.send_message(event)
        try:
            shown = await asyncio.wait_for(future, args.timeout)
        except TimeoutError:
            probe.waiter = None
            out["timeouts"][category] += 1
            out["presses"][category].append(args.timeout)
            await asyncio.sleep(0.5)
            continue
        out["presses"][category].append(shown - t0)
        if shown - t0 > SLOW_PRESS:
            slow.append((category, shown - t0, collections.during(t0, shown)))
    out["frames"] = probe.frames


# -- the pseudo-terminal part -------------------------------------------------------------------
ANSI = re.compile(
    rb"\x1b\[[0-9;?<>=$]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[PX^_][^\x1b]*\x1b\\|\x1b[@-Z\\-_]"
)


def pty_console(root: Path, idle: float, attach: bool) -> dict:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
    env = dict(
        os.environ, TERM="xterm-256color", COLORTERM="truecolor", LINES=str(SIZE[1]), COLUMNS=str(SIZE[0])
    )
    for var in ("TEXTUAL", "TEXTUAL_DRIVER", "TEXTUAL_HEADLESS"):
        env.pop(var, None)
    received = bytearray()
    lock = threading.Lock()
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            with lock:
                received.extend(chunk)

    t0 = time.perf_counter()
    mode = ["--attach"] if attach else ["--workers", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ewg_tui.cli", "-w", str(root), *mode],
        cwd=REPO,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out: dict = {}
    try:
        first = None
        scanned = 0
        deadline = time.perf_counter() + 30
        while first is None and time.perf_counter() < deadline and proc.poll() is None:
            time.sleep(0.005)
            with lock:
                text = ANSI.sub(b"", bytes(received[max(0, scanned - 64) :]))
                size_now = len(received)
            if b"Episodes 1-" in text:
                first = time.perf_counter() - t0
            scanned = size_now
        if first is None:
            with lock:
                tail = ANSI.sub(b"", bytes(received[-2000:])).decode(errors="replace")
            raise SystemExit(
                f"the console in the pseudo-terminal never showed its first window; output:\n{tail}"
            )
        out["first_paint_cold"] = first
        time.sleep(2.0)
        ps = psutil.Process(proc.pid)
        c0, w0 = ps.cpu_times(), time.perf_counter()
        with lock:
            b0 = len(received)
        time.sleep(idle)
        c1, w1 = ps.cpu_times(), time.perf_counter()
        with lock:
            b1 = len(received)
        wall = w1 - w0
        out["idle_cpu_percent"] = 100.0 * ((c1.user - c0.user) + (c1.system - c0.system)) / wall
        out["idle_bytes_per_s"] = (b1 - b0) / wall
        out["idle_threads"] = ps.num_threads()
        out["rss_mb"] = ps.memory_info().rss / 2**20
        os.write(master, b"q")
        keys = "q"
        if not attach:  # its own engine is busy: the console asks; Enter = stop gracefully
            time.sleep(1.0)
            os.write(master, b"\r")
            keys = "q, Enter (stop gracefully)"
        try:
            proc.wait(10)
            out["quit"] = f"exited {proc.returncode} on {keys}"
        except subprocess.TimeoutExpired:
            out["quit"] = f"did not exit on {keys} within 10 s"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stop.set()
        os.close(master)
        reader.join(2)
    return out


# -- report ------------------------------------------------------------------------------------
def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def compile_bytecode() -> None:
    """An installed ewg has its bytecode; a checkout under PYTHONDONTWRITEBYTECODE=1 (set on some
    machines) compiles every module from source at each start: 0.2 s of the cold first paint
    measured here. Compile it once, as `make setup` does, so the figure is an installed console's."""
    import compileall

    for package in ("engine", "ewg_tui"):
        compileall.compile_dir(REPO / package, quiet=1)
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("bytecode: compiled engine/ and ewg_tui/ (PYTHONDONTWRITEBYTECODE is set here)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=100_000)
    ap.add_argument("--presses", type=int, default=300, help="key presses measured (default 300)")
    ap.add_argument("--starts", type=int, default=3, help="app starts for first paint, after a warm-up start")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measurement")
    ap.add_argument(
        "--gap", type=float, default=0.03, help="seconds between a key's repaint and the next key"
    )
    ap.add_argument(
        "--timeout", type=float, default=5.0, help="a key not shown within this is counted as this"
    )
    ap.add_argument("--keep", metavar="DIR", help="build the workspace in DIR and keep it")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    ap.add_argument(
        "--engine",
        choices=("process", "console"),
        default="process",
        help="where the busy engine runs: its own process (the console attached, as `ewg --attach`), "
        "or inside the console (as plain `ewg`); default: process",
    )
    ap.add_argument(
        "--media",
        type=int,
        default=0,
        metavar="N",
        help="the engine renders N real 720p episodes (built-in stages) instead of demo stages; 0: off",
    )
    ap.add_argument("--media-seconds", type=float, default=60.0, help="length of each real episode (s)")
    args = ap.parse_args()

    started = time.perf_counter()
    compile_bytecode()
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ewg-console-bench-"))
    root = tmp / "ws"
    if root.exists():
        shutil.rmtree(root)
    engine = None
    foreign: ForeignEngine | None = None
    try:
        t = time.perf_counter()
        mix = build_workspace(root, args.episodes, media=args.media)
        build_s = time.perf_counter() - t
        if args.media:
            made = add_media(root, args.media, args.media_seconds)
            print(f"media: {args.media} real 720p episodes of {args.media_seconds:.0f} s in {made:.1f} s")
        print(
            f"workspace: {args.episodes} episodes in {build_s:.1f} s at {root}  "
            + ", ".join(f"{k} {v}" for k, v in sorted(mix.items(), key=lambda kv: -kv[1])),
            flush=True,
        )
        executions0 = engine_executions(root)
        foreign = ForeignEngine(root, progress=bool(args.media)).start()
        t_engine = time.perf_counter()
        if args.engine == "process":
            engine = start_engine(root, tmp / "engine.log")
            print(f"engine: pid {engine.pid}, `ewg run --workers 2` on demo stages of 50-200 ms", flush=True)
        else:
            print("engine: inside the console (2 workers), as plain `ewg` runs it", flush=True)

        reads = ReadTimes()
        reads.install()
        load = LoadSampler().start()
        head = asyncio.run(headless(root, args, args.episodes + args.media))
        print("headless part done", flush=True)
        term = pty_console(root, args.idle, attach=args.engine == "process")
        load_text = load.stop()
        executions = engine_executions(root) - executions0
        fillers = filler_executions(root) if args.media else 0
        engine_s = time.perf_counter() - t_engine
        if engine is not None and engine.poll() is not None:
            raise SystemExit(
                f"the engine exited during the benchmark ({engine.returncode}); see {tmp / 'engine.log'}"
            )
    finally:
        if foreign is not None:
            foreign.stop()
        if engine is not None and engine.poll() is None:
            engine.terminate()
            try:
                engine.wait(20)
            except subprocess.TimeoutExpired:
                engine.kill()
                engine.wait()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    all_presses = [v for values in head["presses"].values() for v in values]
    p95 = pct(all_presses, 95)
    fp = max(head["first_paint"])
    rows = [
        (
            "first paint, headless app start (max of %d)" % len(head["first_paint"]),
            f"{ms(fp)} ms",
            "< 1000 ms",
            "PASS" if fp < TARGET_FIRST_PAINT else "MISS",
        ),
        (
            "first paint, real terminal, cold process",
            f"{ms(term['first_paint_cold'])} ms",
            "< 1000 ms",
            "PASS" if term["first_paint_cold"] < TARGET_FIRST_PAINT else "MISS",
        ),
        ("keypress-to-repaint p50 (all keys)", f"{ms(pct(all_presses, 50))} ms", "", ""),
        (
            "keypress-to-repaint p95 (all keys)",
            f"{ms(p95)} ms",
            "< 100 ms (aim 50)",
            ("PASS" if p95 < AIM_P95 else "PASS (over aim)") if p95 < TARGET_P95 else "MISS",
        ),
        ("keypress-to-repaint p99 (all keys)", f"{ms(pct(all_presses, 99))} ms", "", ""),
        (
            "idle CPU of the console process" + (" (engine included)" if args.engine == "console" else ""),
            f"{term['idle_cpu_percent']:.1f} %",
            "(no target)",
            "",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    cpu = psutil.cpu_count()
    print()
    where = "in another process" if args.engine == "process" else "inside the console"
    work = f"real media stages on {args.media} 720p episodes" if args.media else "demo stages"
    print(
        f"ewg console latency: {args.episodes} episodes, {SIZE[0]}x{SIZE[1]}, engine busy {where} on {work} "
        f"({executions} stage executions in {engine_s:.0f} s); {cpu} cores, load {load_text}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )
    if args.media:
        honest = "none, as meant" if not fillers else "NOT MEANT: the figures include that churn"
        print(f"executions on the filler episodes (demo:// sources): {fillers} ({honest})")
    print(f"{'figure'.ljust(width)}  {'result':>10}  {'target':<18}  verdict")
    for name, value, target, verdict in rows:
        print(f"{name.ljust(width)}  {value:>10}  {target:<18}  {verdict}")
    print()
    print(
        f"keypress-to-repaint by key (ms; {len(all_presses)} presses, {head['skipped']} no-op presses skipped, "
        f"window {head['window_size']} rows, gap {args.gap * 1000:.0f} ms):"
    )
    print(f"  {'key':<32} {'n':>4} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}  timeouts")
    for category, values in sorted(head["presses"].items()):
        print(
            f"  {category:<32} {len(values):>4} {ms(pct(values, 50)):>7} {ms(pct(values, 95)):>7} "
            f"{ms(pct(values, 99)):>7} {ms(max(values)):>7}  {head['timeouts'].get(category, 0)}"
        )
    slow = head.get("slow", [])
    waited = [p for p in slow if p[2] > 0.005]
    print(
        f"presses over {SLOW_PRESS * 1000:.0f} ms: {len(slow)} of {len(all_presses)}; "
        f"{len(waited)} of them waited for the garbage collector (5 ms or more; {head.get('gc_passes', 0)} "
        "passes of generation 1-2 during the presses: "
        + ", ".join(
            f"gen {g} {n}, longest {ms(longest)} ms"
            for g, (n, longest) in head.get("gc_by_generation", {}).items()
        )
        + ")"
        + "".join(
            f"\n  {c}: {ms(d)} ms, {ms(g)} ms of it collecting"
            for c, d, g in sorted(slow, key=lambda p: -p[1])[:8]
        )
    )
    print()
    print("console reads during the headless part (ms, on the poll worker thread):")
    print(f"  {'read':<60} {'n':>5} {'p50':>7} {'p95':>7} {'max':>7}")
    for label, values in sorted(reads.times.items()):
        print(
            f"  {label:<60} {len(values):>5} {ms(pct(values, 50)):>7} {ms(pct(values, 95)):>7} {ms(max(values)):>7}"
        )
    print()
    print(
        f"first paint, headless, each start (ms): {', '.join(ms(v) for v in head['first_paint'])}; "
        f"warm-up start {ms(head['first_paint_first'] or float('nan'))}; open_workspace {ms(head['open_workspace'])}"
    )
    print(
        f"real terminal: idle CPU {term['idle_cpu_percent']:.1f} % over {args.idle:.0f} s, "
        f"{term['idle_bytes_per_s'] / 1024:.1f} KiB/s written to the terminal, {term['idle_threads']} threads, "
        f"RSS {term['rss_mb']:.0f} MB, {term['quit']}"
    )
    print(f"total benchmark time {time.perf_counter() - started:.0f} s")
    if args.json:
        print(
            json.dumps(
                {
                    "episodes": args.episodes,
                    "first_paint_headless_s": head["first_paint"],
                    "first_paint_cold_s": term["first_paint_cold"],
                    "open_workspace_s": head["open_workspace"],
                    "press_p50_s": pct(all_presses, 50),
                    "press_p95_s": p95,
                    "press_p99_s": pct(all_presses, 99),
                    "presses": {k: v for k, v in head["presses"].items()},
                    "reads": {k: v for k, v in reads.times.items()},
                    "idle_cpu_percent": term["idle_cpu_percent"],
                    "engine_executions": executions,
                    "media_episodes": args.media,
                    "filler_executions": fillers,
                    "load": load_text,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
