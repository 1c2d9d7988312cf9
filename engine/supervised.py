"""What the engine's supervisors (engine.health, engine.watchdog) may see of the engine they watch.

The runtime builds the supervisors and hands itself to them; they know it only through these
protocols, so neither imports engine.runtime (no import circle, pyproject.toml's import-linter
contracts) and neither reads the engine's private state: its locks, its run table, its events.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .clock import Clock
    from .config import Config
    from .db import Store
    from .workspace import Workspace


class Supervised(Protocol):
    """The engine as every supervisor sees it."""

    config: Config
    store: Store
    clock: Clock
    ws: Workspace

    def halted(self, seconds: float) -> bool:
        """Wait up to `seconds` for the engine to stop its loops; True once it has (a loop then ends)."""
        ...

    def wake(self) -> None:
        """Have the dispatcher look for work now."""
        ...

    def leads(self) -> bool:
        """This engine runs the once-per-site maintenance (one host at a time on a shared database)."""
        ...


class HealthHost(Supervised, Protocol):
    """What engine.health needs besides: the stages running now (their expected disk use)."""

    def running_stages(self) -> list[tuple[str, str]]: ...


class WatchdogHost(Supervised, Protocol):
    """What engine.watchdog needs besides: who it is, what it runs, and how to take work back."""

    owner: str
    rng: random.Random

    def runs_here(self, item_id: str) -> bool:
        """This engine runs `item_id` now (its lease may still be this engine's after a restart)."""
        ...

    def rescue(
        self,
        item_id: str,
        token: int,
        rescues: int,
        outcome: str,
        why: str,
        now: float,
        actor: str = "engine",
    ) -> bool: ...

    def cancel_local(self, item_id: str, reason: str) -> None: ...
