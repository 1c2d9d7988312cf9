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
