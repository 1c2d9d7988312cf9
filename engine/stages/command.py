"""Stages that run an external program (never through a shell; ARCHITECTURE.md contract 6).

`command` in the stage config is an argv template; each element is expanded on its own with the
placeholders of engine.placeholders ({source}, {output_dir}, {input_dir}, {dir_transcribed}, ...),
so a file name with `;`, `$(...)` or spaces stays one argument; the same values are in the
program's environment as EWG_<NAME>. Progress comes from output lines like
`progress: 0.42 transcribing`.

The program runs in its own process group that dies with the engine (engine.stages.groups). Stop
and timeout kill the group (SIGTERM, a grace period, SIGKILL), and so does the program's own exit:
nothing it started outlives the attempt or writes into a published checkpoint. Output is read in
chunks and a line longer than LINE_CAP is cut where it is read, so memory stays flat whatever the
program prints. Exit codes map to error classes: the sysexits defaults below, overridden by
`exit_codes` in ewg.toml; `outputs` names files an exit 0 must have written.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import time
from collections import deque
from typing import Any

from .. import errors, placeholders
from ..errors import Cancelled, StageError
from . import StageContext, groups

PROGRESS_RE = re.compile(r"^\s*progress:\s*([0-9]*\.?[0-9]+)\s*(.*)$", re.IGNORECASE)

LINE_CAP = 64 * 1024  # a longer output line is cut here, where it is read
_CHUNK = 64 * 1024
_TAIL_BYTES = 16 * 1024  # stderr kept as the error detail
_TAIL_LINE = 2 * 1024
_MESSAGE_LINE = 500  # the last stderr line, in the error message
_DRAIN = 1.0  # after the group is ended: how long output may still arrive (a setsid escapee holds the pipe)

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


def placeholders_of(ctx: StageContext) -> dict[str, Any]:
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


def build_argv(template: list[str], ctx: StageContext, values: dict[str, Any] | None = None) -> list[str]:
    """Plain names only (engine.placeholders): no attribute, index, conversion or format spec."""
    values = placeholders_of(ctx) if values is None else values
    argv = []
    for part in template:
        try:
            argv.append(placeholders.expand(str(part), values))
        except KeyError as exc:
            raise StageError(
                errors.CONFIG_ERROR,
                f"command placeholder {{{exc.args[0]}}} has no value for this stage",
                suggestion="Placeholders: " + ", ".join(sorted(values)),
            ) from None
        except placeholders.PlaceholderError as exc:
            raise StageError(errors.CONFIG_ERROR, f"command placeholder: {exc}") from None
    return argv


def stage_env(values: dict[str, Any], marker: str) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in values.items():
        env[placeholders.env_name(name)] = str(value).replace("\0", "")
    if marker:
        env[groups.LEASE_ENV] = marker
    return env


class _Lines:
    """Splits a byte stream into lines, keeping at most LINE_CAP bytes of any line."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.dropped = 0

    def feed(self, data: bytes) -> list[str]:
        lines = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                self._add(data[start:])
                return lines
            self._add(data[start:nl])
            lines.append(self._take())
            start = nl + 1

    def close(self) -> list[str]:
        return [self._take()] if self.buf or self.dropped else []

    def _add(self, piece: bytes) -> None:
        room = LINE_CAP - len(self.buf)
        if len(piece) <= room:
            self.buf += piece
        else:
            self.buf += piece[:room]
            self.dropped += len(piece) - room

    def _take(self) -> str:
        text = self.buf.decode("utf-8", "replace").rstrip("\r")
        if self.dropped:
            text += f" [line cut at {LINE_CAP // 1024} KiB: {self.dropped} more bytes not kept]"
        self.buf = bytearray()
        self.dropped = 0
        return text


class _ByteTail:
    """The last lines of a stream, at most `limit` bytes in all and `line` bytes per line."""

    def __init__(self, limit: int, line: int) -> None:
        self.limit, self.line = limit, line
        self.lines: deque[str] = deque()
        self.size = 0

    def append(self, text: str) -> None:
        if len(text) > self.line:
            text = text[: self.line] + " [...]"
        self.lines.append(text)
        self.size += len(text.encode("utf-8", "replace")) + 1
        while self.size > self.limit and len(self.lines) > 1:
            self.size -= len(self.lines.popleft().encode("utf-8", "replace")) + 1

    def text(self) -> str:
        return "\n".join(self.lines)


class _Output:
    """The program's stdout and stderr: progress lines, the attempt's log, the stderr tail."""

    def __init__(self, ctx: StageContext, proc: subprocess.Popen) -> None:
        self.ctx = ctx
        self.stderr_tail = _ByteTail(_TAIL_BYTES, _TAIL_LINE)
        self.streams = {
            proc.stdout.fileno(): (_Lines(), None),
            proc.stderr.fileno(): (_Lines(), self.stderr_tail),
        }
        self.selector = selectors.DefaultSelector()
        for fd in self.streams:
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ)

    def read(self, timeout: float, extra: int | None = None) -> bool:
        """Read what is there (waiting up to `timeout`); True when `extra` (a pidfd) became ready."""
        if extra is not None:
            self.selector.register(extra, selectors.EVENT_READ)
        try:
            if self.selector.get_map():
                ready = self.selector.select(timeout)
            else:  # both streams closed and no pidfd: only the exit is left to wait for
                time.sleep(timeout)
                ready = []
        finally:
            if extra is not None:
                self.selector.unregister(extra)
        hit = False
        for key, _ in ready:
            if key.fd == extra:
                hit = True
                continue
            self._read(key.fd)
        return hit

    def _read(self, fd: int) -> None:
        lines, tail = self.streams[fd]
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            chunk = lines.feed(data)
        else:
            self.selector.unregister(fd)
            chunk = lines.close()
        for line in chunk:
            self._line(line, tail)

    def _line(self, line: str, tail: _ByteTail | None) -> None:
        m = PROGRESS_RE.match(line)
        if m:
            self.ctx.progress(float(m.group(1)), m.group(2).strip())
        else:
            self.ctx.logger.info("%s", line)
        if tail is not None:
            tail.append(line)

    def drain(self, seconds: float) -> None:
        """Read to end of stream, or for `seconds` at most (something outside the group holds a pipe)."""
        deadline = time.monotonic() + seconds
        while self.selector.get_map() and time.monotonic() < deadline:
            self.read(min(0.05, max(0.0, deadline - time.monotonic())))
        for fd, (lines, tail) in self.streams.items():
            if fd in self.selector.get_map():
                for line in lines.close():
                    self._line(line, tail)
        self.selector.close()


def run(ctx: StageContext) -> None:
    values = placeholders_of(ctx)
    argv = build_argv(ctx.stage_config.command or [], ctx, values)
    grace = ctx.config.engine.force_grace
    ctx.logger.info("running %s", " ".join(argv))
    try:
        proc = groups.popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ctx.output_dir,
            env=stage_env(values, ctx.lease_marker),
            nice=ctx.config.engine.worker_nice,  # an operator's encoder yields the cores like ours do
        )
    except FileNotFoundError:
        raise StageError(
            errors.MISSING_DEPENDENCY,
            f"program {argv[0]!r} not found",
            suggestion=f"Install {argv[0]} or fix `command` in ewg.toml.",
        ) from None
    except PermissionError:
        raise StageError(errors.MISSING_DEPENDENCY, f"program {argv[0]!r} is not executable") from None

    group = groups.Group(proc)
    unregister = ctx.cancel.on_force(group.kill)
    output = _Output(ctx, proc)
    exit_fd = groups.pidfd(proc.pid)
    cancelled = False
    try:
        ctx.record_process(proc.pid, group.pgid)  # with the lease: a crash leaves it for the rescue to kill
        while not groups.exited(proc.pid):
            if ctx.cancel.is_set():
                cancelled = True
                break
            output.read(0.1 if exit_fd is not None else 0.02, exit_fd)
    finally:
        unregister()
        group.end(grace)  # the program is gone: whatever it left in its group goes too, before any publish
        output.drain(_DRAIN)
        for stream in (proc.stdout, proc.stderr):
            stream.close()
        if exit_fd is not None:
            os.close(exit_fd)
    if cancelled:
        raise Cancelled(ctx.cancel.reason or "cancelled")
    ctx.cancel.check()  # killed by a force stop from another thread: that is a cancel, not a failure
    code = proc.returncode
    stderr_tail = output.stderr_tail
    if code == 0:
        _check_outputs(ctx, argv)
        return
    tail = stderr_tail.text()
    last = stderr_tail.lines[-1] if stderr_tail.lines else ""
    if len(last) > _MESSAGE_LINE:
        last = last[:_MESSAGE_LINE] + " [...]"
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


def _check_outputs(ctx: StageContext, argv: list[str]) -> None:
    """A command stage's declared `outputs` must exist after an exit 0: no silent empty checkpoint."""
    if ctx.stage_config.kind != "command":
        return
    missing = [name for name in ctx.stage_config.outputs if not (ctx.output_path / name).exists()]
    if missing:
        names = ", ".join(missing)
        raise StageError(
            errors.PERSISTENT,
            f"{argv[0]} exited 0 but did not write {names} into its output folder "
            f"([stages.{ctx.item.kind}.{ctx.stage}] outputs)",
            suggestion=f"Make the command write {{output_dir}}/{missing[0]}, or fix `outputs` in ewg.toml; "
            "then retry.",
        )
