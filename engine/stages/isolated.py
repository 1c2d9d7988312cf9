"""Heavy stages in a worker subprocess at a lower CPU priority (ARCHITECTURE.md contracts 5 and 6).

Plain `ewg` runs the engine inside the console's process, so a stage that decodes
and encodes video in Python threads would share the GIL and the cores with the
screen an operator types into. A stage resolved through `isolated()` runs in a
child process instead, started at `nice` `[engine] worker_nice`, and the engine's
thread for the attempt only relays: progress and log lines come back over a
pipe, a cancel goes down it, a force stop kills the child's process group, and a
child that dies is an attempt outcome (transient), never an engine crash.

Everything that touches the database or publishes files stays in the engine:
the child writes only into the attempt's private output folder, and the engine
kills the child's whole group before it publishes, so nothing the child started
can write into a published checkpoint. Heartbeats and lease fencing are the
engine's, exactly as for a stage on a thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TRANSIENT, Cancelled, StageError
from . import (
    CancelToken,
    ClipSpec,
    Earlier,
    ItemInfo,
    LogTail,
    StageContext,
    StageFn,
    groups,
    import_callable,
)

# Built-in stages that decode or encode media for most of their run: isolated unless a stage says otherwise.
HEAVY = frozenset({("episode", "transcribed"), ("clip", "generated"), ("clip", "rendered")})

_FRAME = struct.Struct("!I")
_MAX_FRAME = 16 * 1024 * 1024  # a log line or an error is far smaller; anything bigger is a broken child
_POLL = 0.2  # how often the relay looks at the cancel token while the child is quiet


def wants_isolation(kind: str, stage: str, stage_config: Any) -> bool:
    """`isolate = true/false` on the stage decides; otherwise heavy built-in stages are isolated."""
    if stage_config.isolate is not None:
        return bool(stage_config.isolate) and stage_config.kind in ("builtin", "python")
    return stage_config.kind == "builtin" and (kind, stage) in HEAVY


def isolated(target: str, nice: int) -> StageFn:
    """A stage function that runs `target` ("module:function") in a worker subprocess."""

    def run(ctx: StageContext) -> None:
        _Relay(ctx, target, nice).run()

    run.__qualname__ = f"isolated({target})"
    return run


@dataclass
class _Job:
    """What the child needs to rebuild the stage's context; paths and settings only, no handles."""

    target: str
    item: ItemInfo
    stage: str
    attempt: int
    previous_attempts: int
    inputs: dict[str, Path]
    parent_inputs: dict[str, Path]
    output_path: Path
    cache_dir: Path
    item_dir: Path
    workspace: Path
    stage_config: Any
    config: Any
    output_created: bool


_send_lock = threading.Lock()  # a stage may log from its own threads: one frame at a time on the pipe


def _send(fd: int, message: tuple) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_FRAME.pack(len(data)) + data)
    with _send_lock:
        while view:
            view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive(fd: int) -> tuple | None:
    """The next message, or None at end of stream (the other side is gone)."""
    head = _read_exact(fd, _FRAME.size)
    if head is None:
        return None
    (size,) = _FRAME.unpack(head)
    if size > _MAX_FRAME:
        raise ValueError(f"a worker message of {size} bytes is larger than any the protocol sends")
    body = _read_exact(fd, size)
    return None if body is None else pickle.loads(body)


class _Relay:
    """The engine's side: start the child, relay its messages, turn its end into the attempt's outcome."""

    def __init__(self, ctx: StageContext, target: str, nice: int) -> None:
        self.ctx, self.target, self.nice = ctx, target, nice
        self.proc: subprocess.Popen | None = None
        self.forced = False
        self.cancel_sent = False

    def run(self) -> None:
        ctx = self.ctx
        ctx.cancel.check()
        job = _Job(
            self.target,
            ctx.item,
            ctx.stage,
            ctx.attempt,
            ctx.previous_attempts,
            dict(ctx.inputs),
            dict(ctx.parent_inputs),
            ctx.output_path,
            ctx.cache_dir,
            ctx.item_dir,
            ctx.workspace,
            ctx.stage_config,
            ctx.config,
            ctx.output_created,
        )
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ, EWG_WORKER_FD=str(from_child_w))
        env[groups.LEASE_ENV] = ctx.lease_marker  # a rescue after a crash knows the group by it
        try:
            # its own session and group (a force stop and the clean-up reach grandchildren), PDEATHSIG armed
            self.proc = groups.popen(
                [sys.executable, "-c", "from engine.stages.isolated import child_main; child_main()"],
                stdin=to_child_r,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(from_child_w,),
                env=env,
                cwd=str(ctx.workspace),
                nice=self.nice,
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        unregister = ctx.cancel.on_force(self._kill)
        try:
            ctx.record_process(self.proc.pid, self.proc.pid)  # with the lease, for a rescue after a crash
        except BaseException:
            self._kill()
            self.proc.wait()
            os.close(from_child_r)
            os.close(to_child_w)
            unregister()
            raise
        stderr = threading.Thread(target=self._log_stderr, name=f"stderr-{ctx.item.id}", daemon=True)
        stderr.start()
        try:
            _send(to_child_w, ([p for p in sys.path if p], job))
            outcome = self._relay(from_child_r, to_child_w)
        finally:
            unregister()
            self._kill()  # whatever the child started dies before the engine publishes anything
            self.proc.wait()
            stderr.join(timeout=5)
            os.close(from_child_r)
            with contextlib.suppress(OSError):
                os.close(to_child_w)
        self._finish(outcome)

    def _relay(self, fd: int, control: int) -> tuple | None:
        ctx = self.ctx
        while True:
            if ctx.cancel.is_set() and not self.cancel_sent:
                self.cancel_sent = True
                with contextlib.suppress(OSError):  # the child is already gone: its end tells the rest
                    _send(control, ("cancel", ctx.cancel.reason or "stop"))
            ready, _, _ = select.select([fd], [], [], _POLL)
            if not ready:
                continue
            message = _receive(fd)
            if message is None:
                return None
            kind = message[0]
            if kind == "progress":
                ctx.progress(message[1], message[2])
            elif kind == "log":
                ctx.logger.log(message[1], "%s", message[2])
            elif kind == "output":
                ctx.output_state["created"] = True
            elif kind in ("done", "cancelled", "error"):
                return message

    def _finish(self, outcome: tuple | None) -> None:
        ctx = self.ctx
        if outcome is None:
            if ctx.cancel.is_set():
                raise Cancelled(ctx.cancel.reason or "stop")
            code = self.proc.returncode if self.proc else None
            raise StageError(
                TRANSIENT,
                f"the stage's worker process ended without a result ({_describe_exit(code)})",
                suggestion="Retried automatically; if it keeps dying, look at memory (dmesg: oom-kill) "
                "and the stage's log tail.",
            )
        kind = outcome[0]
        if kind == "done":
            ctx.clips = list(outcome[1])
            return
        if kind == "cancelled":
            raise Cancelled(outcome[1])
        raise outcome[1]

    def _kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def _log_stderr(self) -> None:
        """Library noise on the child's stderr goes to the attempt's log, a bounded line at a time."""
        assert self.proc is not None and self.proc.stderr is not None
        for raw in iter(lambda: self.proc.stderr.readline(65536), b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line:
                self.ctx.logger.warning("worker stderr: %s", line)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Forward(logging.Handler):
    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            _send(self.fd, ("log", record.levelno, text))
        except Exception:  # noqa: BLE001 - a log line must never fail the stage
            self.handleError(record)


def child_main() -> None:
    """The worker's side: rebuild the context, run the stage, report its end."""
    out = int(os.environ["EWG_WORKER_FD"])
    first = _receive(0)
    if first is None:
        os._exit(1)
    sys.path[:] = first[0]
    job: _Job = first[1]
    cancel = CancelToken()

    def listen() -> None:
        while True:
            try:
                message = _receive(0)
            except (OSError, ValueError):
                message = None
            if message is None:  # the engine is gone: stop at the next safe point
                cancel.cancel("the engine went away")
                return
            if message[0] == "cancel":
                cancel.cancel(message[1])

    threading.Thread(target=listen, name="control", daemon=True).start()
    logger = logging.Logger(f"ewg.{job.item.id}.{job.stage}")
    logger.addHandler(_Forward(out))
    ctx = StageContext(
        item=job.item,
        stage=job.stage,
        attempt=job.attempt,
        earlier=Earlier(
            previous_attempts=job.previous_attempts, inputs=job.inputs, parent_inputs=job.parent_inputs
        ),
        output_path=job.output_path,
        cache_dir=job.cache_dir,
        item_dir=job.item_dir,
        workspace=job.workspace,
        stage_config=job.stage_config,
        config=job.config,
        cancel=cancel,
        logger=logger,
        log_tail=LogTail(1),
        _progress=lambda f, m: _send(out, ("progress", f, m)),
        lease_marker=os.environ.get(groups.LEASE_ENV, ""),
    )
    ctx.output_state["created"] = job.output_created
    try:
        import_callable(job.target)(ctx)
        result: tuple = ("done", [ClipSpec(c.key, c.start, c.end, c.title) for c in ctx.clips])
    except Cancelled as exc:
        result = ("cancelled", exc.reason)
    except BaseException as exc:  # noqa: BLE001 - every failure is reported to the engine, classified there
        if not isinstance(exc, StageError):  # an expected StageError's message says it; others need the trace
            logger.error("%s", "".join(traceback.format_exception(exc)).rstrip())
        result = ("error", _portable(exc))
    if ctx.output_created:
        _send(out, ("output",))
    _send(out, result)
    os._exit(0)


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling (its type drives classification), else its text."""
    try:
        copy = pickle.loads(pickle.dumps(exc))
        if type(copy) is type(exc) and str(copy) == str(exc):
            return copy
    except Exception:  # noqa: BLE001 - unpicklable exceptions are common in C extensions
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return RuntimeError(f"{type(exc).__name__}: {exc}")
