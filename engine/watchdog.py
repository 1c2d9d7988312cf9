"""Liveness is not progress (ARCHITECTURE.md contract 5).

Every check looks at all running items in the database, whoever owns them:
DEAD (heartbeat stale: rescued at once), TIMED OUT (past the stage timeout),
STALLED (heartbeat fresh, progress frozen past the stall threshold) and SLOW
(far below the stage's median). `enforce` asks the owner to cancel; an owner
that does not stop within the grace period is fenced out (abandoned).
"""

from __future__ import annotations

import logging
import statistics

from . import errors, policy
from .db import work
from .loop_failures import LoopFailures
from .owners import owner_alive
from .supervised import WatchdogHost

log = logging.getLogger("ewg.watchdog")

DEAD, STALLED, SLOW, TIMED_OUT = "DEAD", "STALLED", "SLOW", "TIMED OUT"


class Watchdog:
    def __init__(self, engine: WatchdogHost) -> None:
        self.engine = engine
        self._medians: dict[tuple[str, str], tuple[float, float | None]] = {}

    def loop(self) -> None:
        eng = self.engine
        failures = LoopFailures("watchdog check", log)
        while not eng.halted(eng.config.engine.check_interval):
            try:
                self.check()
                failures.ok()
            except Exception as exc:
                failures.failed(exc)

    def check(self, now: float | None = None) -> dict[str, str]:
        """One pass; returns {item_id: verdict} for the items that have one."""
        eng = self.engine
        cfg = eng.config
        now = eng.clock.now() if now is None else now
        verdicts: dict[str, str] = {}
        items = work.running_items(eng.store)
        alive: dict[str, bool | None] = {}  # per owner, once per pass
        # Heartbeats land every heartbeat_interval; one older than three of them (but not yet past
        # dead_after) means the owner may be dying: judge it DEAD or alive, never STALLED meanwhile.
        fresh_after = now - min(3 * cfg.engine.heartbeat_interval, cfg.engine.dead_after)
        for r in items:
            kind, stage, token, owner = r.kind, r.stage, r.token, r.owner
            mine = owner == eng.owner and eng.runs_here(r.id)
            beat = r.heartbeat_at or 0
            if not mine and owner not in alive:
                alive[owner] = owner_alive(owner)
            if mine and beat < now - cfg.engine.dead_after:
                log.warning(
                    "heartbeat of %s is %.0f s old but this engine runs it (database slow or locked?)",
                    r.id,
                    now - beat,
                )
            elif not mine and (
                alive[owner] is False
                # Another host's work is judged by its heartbeat, by the one host that leads rescues.
                or ((beat < now - cfg.engine.dead_after or (r.lease_expires_at or 0) < now) and eng.leads())
            ):
                why = (
                    f"owner {owner} is gone (its process on this host has exited)"
                    if alive[owner] is False
                    else f"heartbeat of {owner} is {now - beat:.0f} s old"
                )
                if eng.rescue(r.id, token, r.rescues, "dead", why, now, actor="watchdog"):
                    verdicts[r.id] = DEAD
                continue
            if not mine and beat < fresh_after:
                continue  # a late heartbeat: DEAD soon or alive again, not stuck
            if r.cancel_requested and r.cancel_requested_at is not None:
                grace = (
                    cfg.engine.force_grace
                    if r.cancel_requested in ("force", "force_release")
                    else cfg.engine.stop_grace
                )
                if now > r.cancel_requested_at + grace:
                    self.abandon_item(r.id, token, r.cancel_requested, now)
                    continue
            ext = r.deadline_extension
            verdict = None
            if now - (r.started_at or now) > cfg.timeout_for(kind, stage) + ext:
                verdict = TIMED_OUT
            elif now - (r.progress_at or now) > cfg.stall_after_for(kind, stage) + ext:
                verdict = STALLED
            elif self._slow(kind, stage, now - (r.started_at or now), r.progress):
                verdict = SLOW
            policy_name = {TIMED_OUT: "timeout", STALLED: "stall", SLOW: "slow"}.get(verdict or "")
            setting = cfg.policy_for(kind, stage, policy_name) if policy_name else "off"
            if setting == "off":
                verdict = None
            if verdict:
                verdicts[r.id] = verdict
            if verdict != r.verdict:
                self._set_verdict(r.id, token, verdict, now)
            if setting == "enforce" and verdict in (TIMED_OUT, STALLED) and not r.cancel_requested:
                self.request_cancel(r.id, token, "timeout" if verdict == TIMED_OUT else "stall", now)
        self._mark_gone_engines(now, alive)
        return verdicts

    def _mark_gone_engines(self, now: float, alive: dict[str, bool | None]) -> None:
        """An engine whose process is gone (this host) or whose heartbeat is past dead_after is `gone`."""
        eng = self.engine
        dead_after = eng.config.engine.dead_after
        for row in work.live_engines(eng.store):
            owner = row.owner
            if owner == eng.owner:
                continue
            if owner not in alive:
                alive[owner] = owner_alive(owner)
            if alive[owner] is False or row.heartbeat_at < now - dead_after:
                with eng.store.write() as unit:
                    unit.mark_engine_gone(owner, now, "watchdog")

    def _set_verdict(self, item_id: str, token: int, verdict: str | None, now: float) -> None:
        with self.engine.store.write() as unit:
            if unit.set_verdict(item_id, token, verdict) and verdict in (STALLED, TIMED_OUT):
                unit.record_event(now, "watchdog", "verdict", affected=[item_id], result=verdict)

    def request_cancel(self, item_id: str, token: int, reason: str, now: float) -> None:
        with self.engine.store.write() as unit:
            unit.request_cancel(item_id, token, reason, now)
        self.engine.cancel_local(item_id, reason)

    def abandon_item(self, item_id: str, token: int, reason: str, now: float) -> bool:
        """Fence out an owner that did not stop: bump the token, record the attempt as abandoned."""
        eng = self.engine
        with eng.store.write() as unit:
            held = unit.held_attempt(item_id, token)
            if held is None:
                return False
            if reason in ("timeout", "stall"):
                verdict = TIMED_OUT if reason == "timeout" else STALLED
                decision = policy.after_failure(eng.config, errors.TRANSIENT, held.attempts, now, eng.rng)
                decision = policy.Decision(
                    decision.status,
                    decision.attempts,
                    True,
                    decision.next_attempt_at,
                    f"abandoned: did not stop within the grace period; {decision.text}",
                )
                message = f"{verdict.lower()}: abandoned after {now - (held.started_at or now):.0f} s"
                ok = unit.settle_failure(
                    item_id,
                    token,
                    now,
                    "abandoned",
                    decision,
                    errors.TRANSIENT,
                    message,
                    "the stage ignored its cancel token",
                    errors.SUGGESTIONS[errors.TRANSIENT],
                    verdict=verdict,
                    bump=True,
                )
            else:
                ok = unit.release(
                    item_id,
                    token,
                    now,
                    "abandoned",
                    "queued" if reason in ("shutdown", "release", "force_release") else "stopped",
                    "abandoned: force stop, the stage did not stop in time",
                    bump=True,
                )
            if ok:
                unit.record_event(
                    now,
                    "watchdog",
                    "abandon",
                    affected=[item_id],
                    reason=reason,
                    result="fenced out; worker slot released",
                )
        eng.cancel_local(item_id, "lost")
        return ok

    def _slow(self, kind: str, stage: str, elapsed: float, progress: float) -> bool:
        median = self._median(kind, stage, self.engine.clock.now())
        if median is None or median <= 0:
            return False
        factor = self.engine.config.watchdog.slow_factor
        projected = elapsed / progress if progress > 0.05 else elapsed
        return projected > factor * median

    def _median(self, kind: str, stage: str, now: float) -> float | None:
        cached = self._medians.get((kind, stage))
        if cached and now - cached[0] < 60:
            return cached[1]
        values = work.recent_durations(self.engine.store, kind, stage, limit=50)
        median = statistics.median(values) if len(values) >= 5 else None
        self._medians[(kind, stage)] = (now, median)
        return median
