"""What a stage implementation sees, and how a configured stage is resolved.

A stage is a callable `run(ctx: StageContext) -> None`. It reads its inputs
from `ctx.inputs` (the checkpoints of completed stages), writes only into
`ctx.output_dir`, reports `ctx.progress(fraction, message)`, checks
`ctx.cancel` at safe points and fails by raising (a `StageError` when it knows
the error class). The engine does the rest: checkpoint, retry, classification.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import fsafe
from ..config import Config, StageConfig
from ..errors import CONFIG_ERROR, Cancelled, StageError

StageFn = Callable[["StageContext"], None]


class CancelToken:
    """Set by stop, timeout, stall or shutdown; stages poll it at safe points."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None
        self._kill_hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise Cancelled if the token is set: call this at safe points."""
        if self._event.is_set():
            raise Cancelled(self.reason or "cancelled")

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking (and raising Cancelled) as soon as the token is set."""
        if self._event.wait(max(0.0, seconds)):
            raise Cancelled(self.reason or "cancelled")

    def on_force(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Register what a force stop must kill (a subprocess); returns an unregister function."""
        with self._lock:
            self._kill_hooks.append(hook)

        def remove() -> None:
            with self._lock:
                if hook in self._kill_hooks:
                    self._kill_hooks.remove(hook)

        return remove

    def force(self) -> None:
        with self._lock:
            hooks = list(self._kill_hooks)
        for hook in hooks:
            hook()


@dataclass
class ClipSpec:
    key: str  # stable within the episode, so a rerun updates instead of duplicating
    start: float
    end: float
    title: str


@dataclass
class ItemInfo:
    id: str
    kind: str
    source: str
    show: str
    title: str
    parent_id: str | None = None
    clip_start: float | None = None
    clip_end: float | None = None


_TAIL_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")  # stateless: shared


class LogTail(logging.Handler):
    """Keeps the last lines an attempt logged, for the attempt record and the detail pane.

    Bounded in bytes as well as lines: at most `line_bytes` of a line and `max_bytes` in all, so a
    stage printing megabytes leaves a small row in the database (the log tail of its attempt)."""

    def __init__(self, lines: int = 200, max_bytes: int = 32 * 1024, line_bytes: int = 4 * 1024) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=lines)
        self.max_bytes, self.line_bytes = max_bytes, line_bytes
        self.size = 0
        self.setFormatter(_TAIL_FORMAT)

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if len(text) > self.line_bytes:
            text = text[: self.line_bytes] + f" [... {len(text) - self.line_bytes} more characters]"
        size = len(text.encode("utf-8", "replace")) + 1
        if len(self.lines) == self.lines.maxlen:
            self.size -= len(self.lines[0].encode("utf-8", "replace")) + 1
        self.lines.append(text)
        self.size += size
        while self.size > self.max_bytes and len(self.lines) > 1:
            self.size -= len(self.lines.popleft().encode("utf-8", "replace")) + 1

    def text(self) -> str:
        return "\n".join(self.lines)


class Earlier:
    """What an attempt knows of earlier work, looked up on first use: a stage that never asks (a no-op,
    or a real stage that needs only its source) costs no database reads for it."""

    def __init__(
        self,
        load: Callable[[], tuple[int, dict[str, Path], dict[str, Path]]] | None = None,
        *,
        previous_attempts: int = 0,
        inputs: dict[str, Path] | None = None,
        parent_inputs: dict[str, Path] | None = None,
    ) -> None:
        self._load = load
        self._values = None if load else (previous_attempts, dict(inputs or {}), dict(parent_inputs or {}))

    def values(self) -> tuple[int, dict[str, Path], dict[str, Path]]:
        if self._values is None:
            assert self._load is not None
            self._values = self._load()
        return self._values


@dataclass
class StageContext:
    item: ItemInfo
    stage: str
    attempt: int
    earlier: Earlier  # previous attempts, input checkpoints (see the properties below)
    output_path: Path  # see output_dir: created on first use
    cache_dir: Path
    item_dir: Path
    workspace: Path
    stage_config: StageConfig
    config: Config
    cancel: CancelToken
    logger: logging.Logger
    log_tail: LogTail
    clock_now: Callable[[], float] = time.time
    clips: list[ClipSpec] = field(default_factory=list)
    _progress: Callable[[float, str], None] = lambda f, m: None
    extras: dict[str, Any] = field(default_factory=dict)
    lease_marker: str = ""  # names this attempt in its programs' environment (stages.groups)
    _record_process: Callable[[int, int], None] = lambda pid, pgid: None

    # shared with copies made by dataclasses.replace(), so the engine sees a folder a copy created
    output_state: dict = field(default_factory=dict, repr=False)

    @property
    def previous_attempts(self) -> int:
        """Attempt rows of this stage before this one (all outcomes)."""
        return self.earlier.values()[0]

    @property
    def inputs(self) -> dict[str, Path]:
        """Completed stage -> its checkpoint directory."""
        return self.earlier.values()[1]

    @property
    def parent_inputs(self) -> dict[str, Path]:
        """For a clip: its episode's checkpoints."""
        return self.earlier.values()[2]

    @property
    def output_created(self) -> bool:
        return self.output_state.get("created", False)

    @property
    def output_dir(self) -> Path:
        """The attempt's private output folder, created when a stage first asks for it (a stage that
        writes nothing costs no file-system work)."""
        if not self.output_created:
            # An existing folder can only be this attempt's (tokens are unique per attempt); a link planted
            # at its name, or at the item folder's, is replaced by a real owner-only folder, never followed.
            base = self.item_dir.parent
            if self.output_path.is_relative_to(base):
                fsafe.ensure_dir_below(base, self.output_path)
            else:
                fsafe.make_dir(self.output_path)
            self.output_state["created"] = True
        return self.output_path

    @property
    def options(self) -> dict[str, Any]:
        return self.stage_config.options

    def progress(self, fraction: float, message: str = "") -> None:
        self._progress(min(1.0, max(0.0, float(fraction))), message)

    def record_process(self, pid: int, pgid: int) -> None:
        """A stage started a program in its own process group: record it with the lease, so a rescue
        after a crash can end it before the item runs again (stages.groups.kill_recorded)."""
        self._record_process(pid, pgid)

    def create_clip(self, key: str, start: float, end: float, title: str) -> None:
        """Declare a clip of this episode; recorded with the checkpoint, keyed so reruns update it."""
        if self.item.kind != "episode":
            raise StageError(CONFIG_ERROR, "only episode stages can create clips")
        if end <= start:
            raise StageError(CONFIG_ERROR, f"clip {key}: end {end} is not after start {start}")
        self.clips = [c for c in self.clips if c.key != key]
        self.clips.append(ClipSpec(key, float(start), float(end), title))


BUILTIN: dict[tuple[str, str], str] = {}  # (kind, stage) -> "module:function", filled by real stage modules


def import_callable(path: str) -> StageFn:
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise StageError(
            CONFIG_ERROR,
            f"stage callable {path!r} cannot be loaded: {exc}",
            suggestion="Fix `callable` in ewg.toml so it names module:function on the path.",
        ) from None
    if not callable(obj):
        raise StageError(CONFIG_ERROR, f"stage callable {path!r} is not callable")
    return obj


def resolve(kind: str, stage: str, stage_config: StageConfig, *, nice: int = 10) -> StageFn:
    """The implementation for a configured stage; heavy ones run in a worker subprocess at `nice`."""
    if stage_config.kind == "noop":
        return noop
    from . import command, demo

    if stage_config.kind == "demo":
        return demo.run
    if stage_config.kind == "command":
        return command.run
    from .isolated import isolated, wants_isolation

    if stage_config.kind == "python":
        target = stage_config.callable or ""
        import_callable(target)  # a bad path is a config error here, not in the worker
        return (
            isolated(target, nice) if wants_isolation(kind, stage, stage_config) else import_callable(target)
        )
    from .. import media  # noqa: F401  (registers the built-in AI-EWG stages)

    target = BUILTIN.get((kind, stage))
    if target is None:
        raise StageError(
            CONFIG_ERROR,
            f"there is no built-in {kind} stage {stage!r}",
            suggestion='Use kind = "command" or "python" for this stage in ewg.toml.',
        )
    if wants_isolation(kind, stage, stage_config):
        return isolated(target, nice)
    return import_callable(target)


def with_chaos(impl: StageFn) -> StageFn:
    """Run the configured fault script (and demo pacing) before a real stage."""
    from . import demo

    def run(ctx: StageContext) -> None:
        demo.inject(ctx)
        impl(ctx)

    return run


def noop(ctx: StageContext) -> None:
    """Does nothing; for benchmarks and stages a site does not need."""
