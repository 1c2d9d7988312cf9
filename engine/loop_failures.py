"""How a background loop reports that its pass failed, without flooding the log.

The engine's loops (dispatcher, heartbeat, watchdog, health, alerts) retry a failed pass on their
next tick. When the failure persists (the database's disk is full, a lock is held for minutes) the
same traceback every tick buries the one line that matters: 455 tracebacks in 40 s were seen with
SQLITE_FULL. So: the first failure of a kind is logged with its traceback, a resource failure (disk
or memory full) as one line without one, and repeats of the same kind as one line a minute with
their count, until a pass succeeds again.
"""

from __future__ import annotations

import logging
import time

from . import errors

REPEAT_EVERY = 60.0


class LoopFailures:
    def __init__(self, loop: str, logger: logging.Logger, monotonic=time.monotonic) -> None:
        self.loop = loop
        self.log = logger
        self._monotonic = monotonic
        self._kind: str | None = None
        self._count = 0
        self._last_line = 0.0

    def failed(self, exc: BaseException) -> str:
        """Log this failure as it deserves; returns its error class (RESOURCE: back off longer)."""
        error_class = errors.classify(exc).error_class
        kind = f"{type(exc).__name__}: {exc}"[:300]
        now = self._monotonic()
        if kind != self._kind:
            self._kind, self._count, self._last_line = kind, 1, now
            if error_class == errors.RESOURCE:
                self.log.error("%s failed (%s); claiming pauses until the resource returns", self.loop, kind)
            else:
                self.log.exception("%s failed; will retry", self.loop)
            return error_class
        self._count += 1
        if now - self._last_line >= REPEAT_EVERY:
            self.log.error("%s still failing (%d times): %s", self.loop, self._count, kind)
            self._last_line = now
        return error_class

    def ok(self) -> None:
        if self._kind is not None and self._count > 1:
            self.log.warning("%s works again after %d failures", self.loop, self._count)
        self._kind, self._count = None, 0
