"""Early warnings: trouble predicted from the history ewg already keeps, before it lands.

Each check is a pure function of plain numbers (so tests feed it the exact history they mean),
and returns an `EarlyWarning` with its evidence and a suggested action, or None:

* **disk**: the queued work will not fit. Each stage's median output size (from its checkpoint
  manifests) times the items queued for it, against the free space above the critical floor. The
  heaviest stages are throttled (not claimed) until the projection fits again, so a burst of
  renders cannot run the disk into the floor mid-write.
* **failure rate**: a stage's failure rate over its last attempts jumps well above its earlier rate.
* **flapping**: a service went down several times within the hour.
* **memory**: memory use climbs (a least-squares line over the recent samples) toward the limit.
* **slow host**: one host runs a stage far slower than that stage's median on the others.

`Forecaster.run()` gathers the history through engine.db.queries, keeps the current warnings in
`engine_state` (what `ewg status` and the console header show) and records each new warning once as
an `early_warning` event, which the audit log shows and engine.alert_watch turns into an alert.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from .db import Store, queries

STATE_KEY = "warnings"


class WarningKind(StrEnum):
    DISK = "disk"
    FAILURE_RATE = "failure_rate"
    FLAPPING = "flapping"
    MEMORY = "memory"
    SLOW_HOST = "slow_host"


@dataclass(frozen=True)
class EarlyWarning:
    kind: WarningKind
    subject: str  # the stage, service or host it is about
    message: str
    evidence: str
    suggestion: str
    throttle: tuple[tuple[str, str], ...] = field(default=())  # (kind, stage) not to claim for now

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.subject}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kind"] = str(self.kind)
        d["throttle"] = [f"{k}/{s}" for k, s in self.throttle]
        return d


# -- the checks ------------------------------------------------------------------------------------
def disk_forecast(
    free_mb: float,
    floor_mb: float,
    queued: Mapping[tuple[str, str], int],
    output_mb: Mapping[tuple[str, str], float],
) -> EarlyWarning | None:
    need = {stage: n * output_mb[stage] for stage, n in queued.items() if n and output_mb.get(stage)}
    total = sum(need.values())
    room = free_mb - floor_mb
    if total <= max(room, 0.0):
        return None
    throttle: list[tuple[str, str]] = []
    remaining = total
    for stage in sorted(need, key=lambda s: output_mb[s], reverse=True):  # heaviest output first
        if remaining <= room:
            break
        throttle.append(stage)
        remaining -= need[stage]
    parts = ", ".join(
        f"{k}/{s}: {queued[(k, s)]} x {output_mb[(k, s)]:.0f} MB"
        for k, s in sorted(need, key=need.get, reverse=True)
    )
    return EarlyWarning(
        kind=WarningKind.DISK,
        subject="items",
        message=f"the queued work needs about {total:.0f} MB but only {max(room, 0):.0f} MB are free above the floor",
        evidence=f"{parts}; {free_mb:.0f} MB free, floor {floor_mb:.0f} MB",
        suggestion="Free disk space or raise capacity; claims of "
        + ", ".join(f"{k}/{s}" for k, s in throttle)
        + " wait until the rest fits.",
        throttle=tuple(throttle),
    )


def failure_rate_jump(
    stage: tuple[str, str], outcomes: Sequence[bool], recent: int = 20, min_failures: int = 5
) -> EarlyWarning | None:
    """`outcomes` oldest first, True for a failed attempt."""
    if len(outcomes) < recent:
        return None
    now_part, before = outcomes[-recent:], outcomes[:-recent]
    rate = sum(now_part) / len(now_part)
    base = (sum(before) / len(before)) if before else 0.0
    if sum(now_part) < min_failures or rate < 0.25 or rate < 3 * base:
        return None
    kind, name = stage
    return EarlyWarning(
        kind=WarningKind.FAILURE_RATE,
        subject=f"{kind}/{name}",
        message=f"{kind}/{name} fails {rate:.0%} of its last {len(now_part)} attempts",
        evidence=f"{sum(now_part)} of {len(now_part)} recent attempts failed; {base:.0%} before that"
        + ("" if before else " (no earlier history)"),
        suggestion=f"Look at `ewg failures` for {name}: a new input type, a broken dependency or a service.",
    )


def service_flapping(service: str, downs_last_hour: int, threshold: int = 3) -> EarlyWarning | None:
    if downs_last_hour < threshold:
        return None
    return EarlyWarning(
        kind=WarningKind.FLAPPING,
        subject=service,
        message=f"service {service} went down {downs_last_hour} times in the last hour",
        evidence=f"{downs_last_hour} service_down events since an hour ago",
        suggestion=f"Check {service}'s own logs and capacity; its stages block and retry each time it drops.",
    )


def memory_climb(
    samples: Sequence[tuple[float, float]], limit_percent: float, horizon_s: float = 1800.0
) -> EarlyWarning | None:
    """`samples` are (time, memory percent), oldest first."""
    if len(samples) < 6:
        return None
    times = [t for t, _ in samples]
    values = [v for _, v in samples]
    if times[-1] - times[0] < 60:
        return None
    slope, intercept = statistics.linear_regression(times, values)
    current = values[-1]
    if slope <= 0 or current >= limit_percent:
        return None  # not climbing, or already past: the health warning says that
    eta = (limit_percent - current) / slope
    if eta > horizon_s:
        return None
    return EarlyWarning(
        kind=WarningKind.MEMORY,
        subject="memory",
        message=f"memory use climbs toward {limit_percent:.0f}%: about {eta / 60:.0f} min at this rate",
        evidence=f"{values[0]:.0f}% -> {current:.0f}% over {(times[-1] - times[0]) / 60:.0f} min "
        f"({slope * 60:.2f} points a minute)",
        suggestion="Find the process that grows (a stage or a service); fewer workers buy time.",
    )


def slow_hosts(
    stage: tuple[str, str], durations: Mapping[str, Sequence[float]], factor: float = 2.0, min_runs: int = 5
) -> list[EarlyWarning]:
    warnings = []
    kind, name = stage
    for host, own in durations.items():
        others = [d for h, ds in durations.items() if h != host for d in ds]
        if len(own) < min_runs or len(others) < min_runs:
            continue
        mine, theirs = statistics.median(own), statistics.median(others)
        if theirs > 0 and mine > factor * theirs:
            warnings.append(
                EarlyWarning(
                    kind=WarningKind.SLOW_HOST,
                    subject=f"{host}:{kind}/{name}",
                    message=f"{host} runs {kind}/{name} {mine / theirs:.1f}x slower than the other hosts",
                    evidence=f"median {mine:.1f} s over {len(own)} runs on {host}, "
                    f"{theirs:.1f} s over {len(others)} elsewhere",
                    suggestion=f"Check {host}'s load, disk and GPU; `ewg stop` its engine if it keeps lagging.",
                )
            )
    return warnings


# -- running them ------------------------------------------------------------------------------------
class Forecaster:
    def __init__(self, store: Store, memory_limit_percent: float, disk_floor_mb: float) -> None:
        self.store = store
        self.memory_limit_percent = memory_limit_percent
        self.disk_floor_mb = disk_floor_mb
        self.current: dict[str, EarlyWarning] = {}
        self.output_mb: dict[tuple[str, str], float] = {}  # each queued stage's median output, last look

    @property
    def throttled(self) -> set[tuple[str, str]]:
        return {stage for w in self.current.values() for stage in w.throttle}

    def assess(self, now: float, free_mb: float | None) -> list[EarlyWarning]:
        h = queries.forecast_history(self.store, since=now - 3600)
        self.output_mb = h.output_mb
        found: list[EarlyWarning] = []
        if free_mb is not None:
            w = disk_forecast(free_mb, self.disk_floor_mb, h.queued, h.output_mb)
            found += [w] if w else []
        for stage, outcomes in h.outcomes.items():
            w = failure_rate_jump(stage, outcomes)
            found += [w] if w else []
        for service, downs in h.service_downs.items():
            w = service_flapping(service, downs)
            found += [w] if w else []
        w = memory_climb(h.memory, self.memory_limit_percent)
        found += [w] if w else []
        for stage, by_host in h.durations.items():
            found += slow_hosts(stage, by_host)
        return found

    def run(self, now: float, free_mb: float | None) -> list[EarlyWarning]:
        """Assess, publish the current warnings, and record the new ones; returns the new ones."""
        found = {w.key: w for w in self.assess(now, free_mb)}
        new = [w for key, w in found.items() if key not in self.current]
        if new or found.keys() != self.current.keys():
            with self.store.write() as conn:
                conn.set_switch(
                    STATE_KEY,
                    json.dumps([w.to_dict() for w in found.values()]) if found else "",
                    reason=f"{len(found)} early warning(s)",
                    actor="engine",
                    now=now,
                )
                for w in new:
                    conn.record_event(
                        now,
                        "engine",
                        "early_warning",
                        selection=w.subject,
                        reason=f"{w.message} ({w.evidence})",
                        result=w.suggestion,
                    )
        self.current = found
        return new
