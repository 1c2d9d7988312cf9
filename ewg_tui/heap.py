"""The console's garbage collector: no full pass between a key and its frame.

CPython's full (generation 2) pass walks every tracked object. The console holds many that live
long: start-up's modules, classes and widgets (~80k), then Textual's and the tables' caches of
rendered lines. Measured with the console bench and 100k episodes, those passes took up to 90 ms
before `settle` and up to 133 ms later, and every press slower than 100 ms had waited for one.
So `settle` freezes start-up's objects out of the collector's sight once, and `IdleCollector`
takes the automatic full passes away and runs them while no key has come for a moment (or
every MAX_DEFER seconds whatever happens). The young generations are collected as before (a
pass of a few ms); cyclic garbage that lived long enough to reach the old one waits at most
MAX_DEFER seconds. Only `run_console` turns this on: it changes the whole process's collector.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

IDLE_AFTER = 1.0  # seconds without a key before a full pass may run
CHECK_EVERY = 5.0  # how often the console asks whether one is due
MAX_DEFER = 120.0  # a full pass runs by then, keys or not
_NEVER = 2**30  # a generation-2 threshold no count reaches


def settle() -> None:
    """Collect what start-up left, then freeze the rest: it is not walked again."""
    gc.collect()
    gc.freeze()


class IdleCollector:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._thresholds: tuple[int, int, int] | None = None
        self._last_key = self._last_full = clock()
        self.full_passes = 0

    @property
    def enabled(self) -> bool:
        return self._thresholds is not None

    def enable(self) -> None:
        if self._thresholds is None:
            self._thresholds = gc.get_threshold()
            young, middle, _old = self._thresholds
            gc.set_threshold(young, middle, _NEVER)

    def disable(self) -> None:
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None

    def key_pressed(self) -> None:
        self._last_key = self._clock()

    def collect_if_idle(self) -> bool:
        """A full pass if no key came for IDLE_AFTER seconds (or none ran for MAX_DEFER)."""
        if self._thresholds is None:
            return False
        now = self._clock()
        if now - self._last_key < IDLE_AFTER and now - self._last_full < MAX_DEFER:
            return False
        gc.collect()
        self._last_full = self._clock()
        self.full_passes += 1
        return True
