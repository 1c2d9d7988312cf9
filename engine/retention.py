"""Retention: the database stays bounded on a box that runs for years.

`[retention] days` old history goes: finished attempts (but each item keeps its newest
`keep_attempts_per_item`, so every item's story still ends in its detail view), the engine's and
watchdog's own events, and health samples. The audit of people's verbs is never pruned: who did
what to which item is the record an operator is asked for months later.

The engine prunes on its own every `interval` seconds; `ewg prune [--dry-run]` does it now.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .db import Store
from .db.upkeep import PruneCounts, count_prunable

DAY = 86400.0
ENGINE_ACTORS = ("engine", "watchdog")  # everything else in `events` is a person's verb


@dataclass
class PruneReport:
    cutoff: float
    attempts: int = 0
    events: int = 0
    health: int = 0
    applied: bool = False

    @property
    def total(self) -> int:
        return self.attempts + self.events + self.health

    def to_dict(self) -> dict:
        return asdict(self)

    def count(self, counts: PruneCounts) -> None:
        self.attempts, self.events, self.health = counts.attempts, counts.events, counts.health


def prune(
    store: Store,
    *,
    days: float,
    keep_attempts_per_item: int,
    now: float,
    dry_run: bool,
    actor: str = "engine",
) -> PruneReport:
    """Count (dry run) or delete history older than `days`, in one transaction with its audit event."""
    report = PruneReport(cutoff=now - days * DAY)
    if dry_run:
        report.count(
            count_prunable(
                store,
                cutoff=report.cutoff,
                keep_attempts_per_item=keep_attempts_per_item,
                actors=ENGINE_ACTORS,
            )
        )
        return report
    with store.write() as unit:
        report.count(
            unit.prune_history(
                cutoff=report.cutoff, keep_attempts_per_item=keep_attempts_per_item, actors=ENGINE_ACTORS
            )
        )
        report.applied = True
        if report.total:
            unit.record_event(
                now,
                actor,
                "prune",
                selection=f"older than {days:g} days",
                result=f"{report.attempts} attempts, {report.events} engine events, {report.health} health samples",
            )
    return report
