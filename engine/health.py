"""Health (ARCHITECTURE.md contract 9): CPU, memory, disk and external services.

Below the critical disk floor, or after a stage hit ENOSPC/ENOMEM, the engine
stops claiming work and says why until the resource returns; items blocked by
a resource or a down service go back to the queue without spending attempts.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable

import psutil

from . import errors, retention
from .db.upkeep import RESOURCE_PAUSE, HealthSample
from .forecast import Forecaster
from .loop_failures import LoopFailures
from .supervised import HealthHost
from .verbs import finish_pending_removals

log = logging.getLogger("ewg.health")

RESOURCE_PREFIX = "resource: "
MIN_WRITABLE_MB = 16.0  # below this a WAL commit or checkpoint may fail, whatever the configured floor
ROOM_CHECK_EVERY = 0.1  # seconds between claim-time disk checks (two statvfs calls each)
SERVICE_PREFIX = "service "


def disk_free_mb(path: str) -> float:
    return shutil.disk_usage(path).free / 2**20


def floor_breach(folders: list[str], floor_mb: float, free_mb=disk_free_mb) -> str:
    """Why claiming must pause, read off the disks themselves ("" when there is room).

    `ewg status` and an attached console ask the disks directly: when the database's own volume is
    the one that filled, the engine cannot record its pause there for them to read.
    """
    for folder in folders:
        try:
            free = free_mb(folder)
        except OSError:
            continue
        if free < floor_mb:
            return (
                f"{RESOURCE_PREFIX}disk free {free:.0f} MB at {folder} is below the critical floor "
                f"{floor_mb:.0f} MB"
            )
        if free < MIN_WRITABLE_MB:  # whatever the floor says: SQLite cannot commit here (SQLITE_FULL)
            return f"{RESOURCE_PREFIX}disk at {folder} is full ({free:.1f} MB free): database writes fail"
    return ""


FILL_WINDOW_S = 30 * 60  # the fill rate is fitted over this much history: long enough to ride out bursts


def time_to_full(samples: list[tuple[float, float]], window: float = FILL_WINDOW_S) -> float | None:
    """Seconds until free space reaches zero at the fill rate of the last `window` seconds, None when
    not filling.

    The rate is the least-squares slope of free space over the window, not the difference of two
    samples: one checkpoint published or one cache cleared moved the old figure from 15 h to 6 days
    within minutes. A fit over half an hour moves only as fast as the trend does."""
    if len(samples) < 2:
        return None
    recent = [(t, f) for t, f in samples if t >= samples[-1][0] - window]
    if len(recent) < 3:
        return None
    n = len(recent)
    mean_t = sum(t for t, _ in recent) / n
    mean_f = sum(f for _, f in recent) / n
    spread = sum((t - mean_t) ** 2 for t, _ in recent)
    if spread <= 0:
        return None
    slope = sum((t - mean_t) * (f - mean_f) for t, f in recent) / spread  # MB per second (negative: filling)
    if slope >= 0:
        return None
    free_now = mean_f + slope * (recent[-1][0] - mean_t)  # the fitted value now, not the last noisy sample
    return max(0.0, free_now) / -slope


def check_service(url: str, timeout: float, expect_status: int = 200) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - configured http(s) URL
            ok = resp.status == expect_status
            return ok, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return exc.code == expect_status, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"unreachable: {reason}"


class HealthMonitor:
    def __init__(
        self,
        engine: HealthHost,
        disk_free_mb: Callable[[str], float] | None = None,
        probe: Callable[[str, float, int], tuple[bool, str]] = check_service,
    ) -> None:
        self.engine = engine
        self.disk_free_mb = disk_free_mb or globals()["disk_free_mb"]
        self.probe = probe
        self.resource_pause: str | None = None
        self.blocked_stages: set[tuple[str, str]] = set()
        self.down: dict[str, str] = {}
        self._hold_until = 0.0
        self._hold_reason = ""
        self._fill: deque[tuple[float, float]] = deque(maxlen=2000)  # time-windowed in time_to_full
        self._last_service_check: dict[str, float] = {}
        self._lock = threading.Lock()
        self.latest: dict = {}
        self.scan_error = ""
        self._room_checked = -1e18
        self._room_mb = float("inf")  # room above the floor at the last claim-time check
        cfg = engine.config.health
        self.forecaster = Forecaster(
            engine.store,
            memory_limit_percent=cfg.memory_warn_percent,
            disk_floor_mb=cfg.disk_critical_free_mb,
        )

    def loop(self) -> None:
        eng = self.engine
        last_backup = eng.clock.now()
        last_scan = last_forecast = last_prune = last_removals = -1e18
        failures = LoopFailures("health check", log)
        while not eng.halted(min(eng.config.health.interval, 1.0)):
            try:
                now = eng.clock.now()
                if now - self.latest.get("at", 0) >= eng.config.health.interval:
                    self.sample()
                if now - last_removals >= eng.config.health.interval:
                    last_removals = now
                    # a verb process that died between its commit and its file work holds its items
                    finish_pending_removals(eng.ws)
                leads = eng.leads()  # scans, pruning and backups run on one host of a site
                keep = eng.config.retention
                if leads and keep.days and now - last_prune >= keep.interval:
                    last_prune = now
                    retention.prune(
                        eng.store,
                        days=keep.days,
                        keep_attempts_per_item=keep.keep_attempts_per_item,
                        now=now,
                        dry_run=False,
                    )
                every = eng.config.health.forecast_interval
                if every and now - last_forecast >= every:
                    last_forecast = now
                    self.forecast(now)
                self.check_services()
                sources = eng.config.sources
                scan_due = sources.scan_interval and now - last_scan >= sources.scan_interval
                if leads and sources.configured and scan_due:
                    last_scan = now
                    self._scan()
                interval = eng.config.engine.backup_interval
                if leads and interval and eng.store.supports_backup and now - last_backup >= interval:
                    eng.store.backup(eng.ws.backups)
                    last_backup = now
                failures.ok()
            except Exception as exc:
                if failures.failed(exc) == errors.RESOURCE:
                    self.hold(f"health check failed: {exc}")

    def forecast(self, now: float) -> None:
        """Early warnings (engine.forecast); a disk forecast also holds claims of the heaviest stages."""
        free = self.latest.get("disk_free_mb")
        db_free = self.latest.get("db_disk_free_mb")
        low = min(free, db_free) if free is not None and db_free is not None else free
        for warning in self.forecaster.run(now, low):
            log.warning("early warning: %s (%s). %s", warning.message, warning.evidence, warning.suggestion)

    @property
    def held_stages(self) -> set[tuple[str, str]]:
        """Stages not to claim now: their service is down, the disk forecast throttles them, or their
        typical output would not fit in the room left above the floor at the last claim check."""
        too_big = {stage for stage, mb in self.forecaster.output_mb.items() if mb > self._room_mb}
        return self.blocked_stages | self.forecaster.throttled | too_big

    def room_to_claim(self) -> bool:
        """Checked at claim time, not only every sample, so a burst of claims cannot run the disk
        through the floor: free space, less what the running stages are expected to write."""
        mono = time.monotonic()
        if mono - self._room_checked < ROOM_CHECK_EVERY:
            return self._room_mb > 0
        self._room_checked = mono
        eng = self.engine
        floor = eng.config.health.disk_critical_free_mb
        try:
            free = self.disk_free_mb(str(eng.ws.items_root if eng.ws.items_root.exists() else eng.ws.root))
            if eng.store.local_dir is not None:
                free = min(free, self.disk_free_mb(str(eng.store.local_dir)))
        except OSError:
            return True  # the health sample reports an unreadable disk; do not stall on it here
        expected = self.forecaster.output_mb
        reserved = sum(expected.get(stage, 0.0) for stage in eng.running_stages())
        self._room_mb = free - reserved - floor
        if self._room_mb <= 0 and self.resource_pause is None:
            self.hold(
                f"disk free {free:.0f} MB, {reserved:.0f} MB of it expected from running stages, "
                f"is at the critical floor {floor:.0f} MB"
            )
        return self._room_mb > 0

    def _scan(self) -> None:
        from .config import ConfigError
        from .intake import scan_once

        try:
            intake = scan_once(self.engine.ws)
            # Each bad entry once, not every interval: the scan state remembers what was reported.
            for problem in intake.new_problems:
                log.warning("scan: %s: %s", problem.shown, problem.why)
            if intake.added or intake.moved:
                self.engine.wake()
        except ConfigError as exc:
            if str(exc) != self.scan_error:
                log.error("%s", exc)
            self.scan_error = str(exc)
        else:
            self.scan_error = ""

    def hold(self, reason: str) -> None:
        """A stage hit a resource error: pause claiming until the next healthy sample."""
        with self._lock:
            self._hold_until = self.engine.clock.now() + self.engine.config.health.interval
            self._hold_reason = reason
            self.resource_pause = f"{RESOURCE_PREFIX}{reason}"
        try:
            self._write_pause()
        except Exception:  # the database itself may be what is full: the pause holds in memory
            log.warning("could not record the resource pause: %s", reason)

    def sample(self) -> dict:
        eng = self.engine
        cfg = eng.config.health
        now = eng.clock.now()
        free = self.disk_free_mb(str(eng.ws.items_root if eng.ws.items_root.exists() else eng.ws.root))
        local = eng.store.local_dir  # None: the database is on a server, its disk is not ours to watch
        db_free = free if local is None else self.disk_free_mb(str(local))
        self._fill.append((now, min(free, db_free)))
        ttf = time_to_full(list(self._fill))
        sample = {
            "at": now,
            "cpu_percent": psutil.cpu_percent(None),
            "memory_percent": psutil.virtual_memory().percent,
            "disk_free_mb": free,
            "db_disk_free_mb": db_free,
            "time_to_full_s": ttf,
        }
        self.latest = sample
        low = min(free, db_free)
        with self._lock:
            if low < cfg.disk_critical_free_mb:
                self.resource_pause = (
                    f"{RESOURCE_PREFIX}disk free {low:.0f} MB is below the critical floor "
                    f"{cfg.disk_critical_free_mb:.0f} MB"
                )
            elif self.resource_pause and now >= self._hold_until:
                self.resource_pause = None
            paused = self.resource_pause
        with eng.store.write() as unit:
            unit.record_health_sample(
                HealthSample(now, sample["cpu_percent"], sample["memory_percent"], free, db_free, ttf),
                keep_after=now - 3600,
            )
            if paused is None:  # the resource is back: what waited for one runs again
                unit.requeue_blocked(now=now, reason_prefix=SERVICE_PREFIX, matching=False)
        self._write_pause()
        return sample

    def _write_pause(self) -> None:
        eng = self.engine
        now = eng.clock.now()
        value = self.resource_pause or ""
        with eng.store.write() as unit:
            # the figures in the reason move with every sample: the switch is rewritten when they do
            change = unit.update_switch(RESOURCE_PAUSE, value, reason=value, actor="engine", now=now)
            if change.turned:  # one event when a pause begins, one when it ends
                unit.record_event(
                    now,
                    "engine",
                    "resource_pause" if value else "resource_resume",
                    reason=value,
                    result="claiming paused" if value else "claiming resumed",
                )

    # -- services ---------------------------------------------------------------------------
    def stages_needing(self, service: str) -> list[tuple[str, str]]:
        return [
            (kind, stage)
            for kind, table in self.engine.config.stages.items()
            for stage, sc in table.items()
            if service in sc.services
        ]

    def check_services(self, force: bool = False) -> None:
        eng = self.engine
        now = eng.clock.now()
        for name, svc in eng.config.services.items():
            if not force and now - self._last_service_check.get(name, -1e18) < svc.interval:
                continue
            self._last_service_check[name] = now
            ok, message = self.probe(svc.url, svc.timeout, svc.expect_status)
            self._record_service(name, ok, message, now)

    def _record_service(self, name: str, ok: bool, message: str, now: float) -> None:
        eng = self.engine
        was_down = name in self.down
        stages = self.stages_needing(name)
        with self._lock:
            if ok:
                self.down.pop(name, None)
            else:
                self.down[name] = message
            self.blocked_stages = {s for svc in self.down for s in self.stages_needing(svc)}
        with eng.store.write() as unit:
            unit.record_service(name, ok=ok, message=message, now=now)
            if stages and not ok:
                unit.block_waiting(stages, reason=f"{SERVICE_PREFIX}{name} is down ({message})", now=now)
            if stages and ok and was_down:
                unit.requeue_blocked(now=now, reason_prefix=f"{SERVICE_PREFIX}{name} ", matching=True)
            if ok == was_down:
                unit.record_event(
                    now,
                    "engine",
                    "service_up" if ok else "service_down",
                    selection=name,
                    result=message,
                )
        if ok and was_down:
            eng.wake()

    def down_service_for(self, kind: str, stage: str, recheck: bool = False) -> str | None:
        """Name of a down service the stage needs (rechecked now when asked), else None."""
        cfg = self.engine.config
        for name in cfg.stage(kind, stage).services:
            if recheck:
                svc = cfg.services[name]
                ok, message = self.probe(svc.url, svc.timeout, svc.expect_status)
                self._record_service(name, ok, message, self.engine.clock.now())
            if name in self.down:
                return name
        return None
