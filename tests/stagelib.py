"""Stage callables used by the engine tests (kind = "python")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from engine.errors import StageError


def record(ctx) -> None:
    """Append (item, stage, pid, start, end) to a shared log so tests can look for overlaps."""
    start = time.time()
    ctx.cancel.wait(float(ctx.options.get("seconds", 0.05)))
    (ctx.output_dir / "out.txt").write_text(f"{ctx.item.id} {ctx.stage}\n")
    line = (
        json.dumps(
            {"item": ctx.item.id, "stage": ctx.stage, "pid": os.getpid(), "start": start, "end": time.time()}
        )
        + "\n"
    )
    fd = os.open(ctx.options["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def hang_respecting_cancel(ctx) -> None:
    ctx.progress(0.1, "started")
    while True:
        ctx.cancel.wait(0.05)


def hang_ignoring_cancel(ctx) -> None:
    ctx.progress(0.1, "started")
    end = time.time() + float(ctx.options.get("seconds", 30))
    while time.time() < end:
        time.sleep(0.02)


def fail_transient(ctx) -> None:
    raise StageError("transient", "upstream returned HTTP 503")


def spawn_children(ctx) -> None:
    """A stage that starts a grandchild and hangs: force stop must kill the whole group."""
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def own_autogroup(wait: float = 5.0) -> str | None:
    """This process's scheduling group ("/autogroup-N nice K"), None without autogroups. The engine
    sets a niced stage's group right after starting it, so a niced process waits a moment for that."""
    deadline = time.monotonic() + wait
    while True:
        try:
            group = open("/proc/self/autogroup").read().strip()
        except OSError:
            return None
        if (
            os.getpriority(os.PRIO_PROCESS, 0) <= 0
            or not group.endswith(" nice 0")
            or time.monotonic() > deadline
        ):
            return group
        time.sleep(0.02)


def where_am_i(ctx) -> None:
    """Write the process it runs in (pid, session, nice, autogroup) and report progress and a log line."""
    ctx.progress(0.5, "halfway")
    ctx.logger.info("working in %d", os.getpid())
    autogroup = own_autogroup()
    info = {
        "pid": os.getpid(),
        "sid": os.getsid(0),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "autogroup": autogroup,
        "inputs": sorted(ctx.inputs),
    }
    (ctx.output_dir / "where.json").write_text(json.dumps(info))
    ctx.cancel.wait(float(ctx.options.get("seconds", 0)))


def die_hard(ctx) -> None:
    """The worker process itself dies (a segfault in a codec, the OOM killer)."""
    ctx.progress(0.2, "about to die")
    os.kill(os.getpid(), 9)


def fail_with(ctx) -> None:
    kind = ctx.options.get("error", "stage")
    if kind == "stage":
        raise StageError("persistent", "the source is unreadable", suggestion="Replace the source file.")
    if kind == "enospc":
        raise OSError(28, "No space left on device")
    raise ValueError("bad value in the data")


def clips_in_worker(ctx) -> None:
    ctx.create_clip("c1", 1.0, 2.5, "first")
    ctx.create_clip("c2", 3.0, 4.0, "second")
