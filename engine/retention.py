"""Retention: the database stays bounded on a box that runs for years.

`[retention] days` old history goes: finished attempts (but each item keeps its newest
`keep_attempts_per_item`, so every item's story still ends in its detail view), the engine's and
watchdog's own events, and health samples. The audit of people's verbs is never pruned: who did
what to which item is the record an operator is asked for months later.

The engine prunes on its own every `interval` seconds; `ewg prune [--dry-run]` does it now.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from . import transitions
from .db import Store

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


_OLD_ATTEMPTS = (
    "FROM attempts WHERE ended_at IS NOT NULL AND ended_at < ? AND id IN ("
    " SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY item_id ORDER BY id DESC) AS newest"
    " FROM attempts) WHERE newest > ?)"
)
_OLD_EVENTS = "FROM events WHERE at < ? AND actor IN (%s)" % ",".join("?" * len(ENGINE_ACTORS))
_OLD_HEALTH = "FROM health WHERE at < ?"


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
    params = {
        "attempts": (report.cutoff, keep_attempts_per_item),
        "events": (report.cutoff, *ENGINE_ACTORS),
        "health": (report.cutoff,),
    }
    sql = {"attempts": _OLD_ATTEMPTS, "events": _OLD_EVENTS, "health": _OLD_HEALTH}
    if dry_run:
        for table, where in sql.items():
            setattr(report, table, int(store.read_one(f"SELECT COUNT(*) {where}", params[table])[0]))
        return report
    with store.write() as conn:
        for table, where in sql.items():
            setattr(report, table, conn.execute(f"DELETE {where}", params[table]).rowcount)
        report.applied = True
        if report.total:
            transitions.record_event(
                conn,
                now,
                actor,
                "prune",
                selection=f"older than {days:g} days",
                result=f"{report.attempts} attempts, {report.events} engine events, {report.health} health samples",
            )
    return report
