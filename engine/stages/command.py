"""Stages that run an external program (never through a shell).

`command` in the stage config is an argv template; each element is formatted
on its own with placeholders such as {source}, {output_dir}, {input_dir},
{dir_transcribed}, so a file name with `;`, `$(...)` or spaces stays one
argument. Progress comes from output lines like `progress: 0.42 transcribing`.
The program runs in its own process group: stop and timeout kill the group
(SIGTERM, a grace period, SIGKILL). Exit codes map to error classes: the
sysexits defaults below, overridden by `exit_codes` in ewg.toml.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from collections import deque
from typing import Any

from .. import errors
from ..errors import Cancelled, StageError
from . import StageContext

PROGRESS_RE = re.compile(r"^\s*progress:\s*([0-9]*\.?[0-9]+)\s*(.*)$", re.IGNORECASE)

DEFAULT_EXIT_CODES = {
    65: errors.PERSISTENT,  # EX_DATAERR
    66: errors.PERSISTENT,  # EX_NOINPUT
    69: errors.TRANSIENT,  # EX_UNAVAILABLE
    74: errors.TRANSIENT,  # EX_IOERR
    75: errors.TRANSIENT,  # EX_TEMPFAIL
    78: errors.CONFIG_ERROR,  # EX_CONFIG
    126: errors.MISSING_DEPENDENCY,  # found but not executable
    127: errors.MISSING_DEPENDENCY,  # not found
}


class _Safe(dict):
    def __missing__(self, key: str) -> str:
        raise StageError(
            errors.CONFIG_ERROR,
            f"command placeholder {{{key}}} is unknown",
            suggestion="Placeholders: " + ", ".join(sorted(self)),
        )


def placeholders(ctx: StageContext) -> dict[str, Any]:
    values: dict[str, Any] = {
        "item_id": ctx.item.id,
        "kind": ctx.item.kind,
        "stage": ctx.stage,
        "source": ctx.item.source,
        "show": ctx.item.show,
        "title": ctx.item.title,
        "output_dir": str(ctx.output_dir),
        "cache_dir": str(ctx.cache_dir),
        "item_dir": str(ctx.item_dir),
        "workspace": str(ctx.workspace),
        "attempt": ctx.attempt,
        "clip_start": ctx.item.clip_start if ctx.item.clip_start is not None else "",
        "clip_end": ctx.item.clip_end if ctx.item.clip_end is not None else "",
        "input_dir": str(list(ctx.inputs.values())[-1]) if ctx.inputs else "",
    }
    for stage, path in ctx.inputs.items():
        values[f"dir_{stage}"] = str(path)
    return values


def build_argv(template: list[str], ctx: StageContext) -> list[str]:
    values = _Safe(placeholders(ctx))
    return [part.format_map(values) for part in template]


def run(ctx: StageContext) -> None:
    argv = build_argv(ctx.stage_config.command or [], ctx)
    grace = ctx.config.engine.force_grace
    ctx.logger.info("running %s", " ".join(argv))
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ctx.output_dir,
            start_new_session=True,
            text=True,
            errors="replace",
        )
    except FileNotFoundError:
        raise StageError(
            errors.MISSING_DEPENDENCY,
            f"program {argv[0]!r} not found",
            suggestion=f"Install {argv[0]} or fix `command` in ewg.toml.",
        ) from None
    except PermissionError:
        raise StageError(errors.MISSING_DEPENDENCY, f"program {argv[0]!r} is not executable") from None

    stderr_tail: deque[str] = deque(maxlen=60)

    def pump(stream, keep: deque[str] | None) -> None:
        for line in stream:
            line = line.rstrip("\n")
            m = PROGRESS_RE.match(line)
            if m:
                ctx.progress(float(m.group(1)), m.group(2).strip())
            else:
                ctx.logger.info("%s", line)
            if keep is not None:
                keep.append(line)

    readers = [
        threading.Thread(target=pump, args=(proc.stdout, None), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, stderr_tail), daemon=True),
    ]
    for t in readers:
        t.start()
    unregister = ctx.cancel.on_force(lambda: kill_group(proc, 0))
    try:
        while proc.poll() is None:
            if ctx.cancel.is_set():
                kill_group(proc, grace)
                for t in readers:
                    t.join(timeout=1)
                raise Cancelled(ctx.cancel.reason or "cancelled")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)
    finally:
        unregister()
    for t in readers:
        t.join(timeout=5)
    ctx.cancel.check()  # killed by a force stop from another thread: that is a cancel, not a failure
    code = proc.returncode
    if code == 0:
        return
    tail = "\n".join(stderr_tail)
    last = stderr_tail[-1] if stderr_tail else ""
    message = f"{argv[0]} exited with code {code}" + (f": {last}" if last else "")
    mapped = {int(k): v for k, v in ctx.stage_config.exit_codes.items()}
    error_class = mapped.get(code) or DEFAULT_EXIT_CODES.get(code)
    if errors.RESOURCE_TEXT.search(tail):  # a full disk is a full disk, whatever exit code it became
        error_class = errors.RESOURCE
    if error_class is None:
        if code < 0:  # killed by a signal we did not send
            error_class = errors.TRANSIENT
        else:
            error_class = errors.classify(RuntimeError(tail or message)).error_class
    raise StageError(error_class, message, detail=tail)


def kill_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group, wait `grace` seconds, then SIGKILL it."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
