"""Alerts: tell people what needs them when nobody is watching the console.

An `Alert` is a small JSON document (event, item ids, error class, message, suggestion, host). The
`Alerter` takes alerts from the engine without ever blocking it: `notify()` only enqueues, and one
delivery thread posts each alert to every sink (`[alerts] webhook` as a JSON POST, `[alerts] command`
with the JSON on stdin), retrying a failed delivery with exponential backoff (tenacity).

Two guards keep a bad hour from becoming a thousand messages:

* **Deduplication.** The same (event, items, class) within `dedupe_window` seconds is dropped.
* **Rate limit.** At most `per_minute` alerts leave in any 60 s; the excess is counted, not queued,
  and the next alert that leaves says how many were suppressed, so nothing is silently lost.
"""

from __future__ import annotations

import json
import logging
import queue
import subprocess
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from tenacity import Retrying, stop_after_attempt, wait_exponential

from .clock import Clock, SystemClock, iso

log = logging.getLogger("ewg.alerts")

ALERT_SCHEMA = 1


class AlertEvent(StrEnum):
    NEEDS_OPERATOR = "needs_operator"  # failed on a road that waits for a person
    STUCK = "stuck"  # STALLED or TIMED OUT
    RESOURCE_PAUSE = "resource_pause"  # claiming paused: disk, memory
    SERVICE_DOWN = "service_down"  # a stage's service stopped answering; its stages wait
    EARLY_WARNING = "early_warning"  # trouble predicted before it lands
    ENGINE_STOP = "engine_stop"
    TEST = "test"  # `ewg alerts test`


@dataclass(frozen=True)
class Alert:
    event: AlertEvent
    message: str
    host: str
    at: float
    items: tuple[str, ...] = ()
    error_class: str | None = None
    suggestion: str = ""

    def key(self) -> tuple:
        return (self.event, self.items, self.error_class)

    def document(self, suppressed: int = 0) -> dict:
        return {
            "schema": ALERT_SCHEMA,
            "event": str(self.event),
            "at": iso(self.at),
            "host": self.host,
            "items": list(self.items),
            "error_class": self.error_class,
            "message": self.message,
            "suggestion": self.suggestion,
            "suppressed_before": suppressed,
        }


class DeliveryError(Exception):
    """A sink could not take an alert; the message says which and why."""


class Sink(Protocol):
    name: str

    def deliver(self, payload: bytes) -> None: ...


@dataclass
class WebhookSink:
    url: str
    timeout: float = 10.0
    name: str = "webhook"

    def deliver(self, payload: bytes) -> None:
        request = urllib.request.Request(
            self.url, data=payload, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (operator's URL)
                response.read(65536)
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"webhook answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise DeliveryError(f"webhook unreachable: {getattr(exc, 'reason', exc)}") from exc


@dataclass
class CommandSink:
    argv: Sequence[str]
    timeout: float = 30.0
    name: str = "command"

    def deliver(self, payload: bytes) -> None:
        try:
            proc = subprocess.run(
                list(self.argv), input=payload, capture_output=True, timeout=self.timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DeliveryError(f"alert command failed to run: {exc}") from exc
        if proc.returncode != 0:
            tail = proc.stderr[-300:].decode("utf-8", "replace").strip()
            raise DeliveryError(f"alert command exited {proc.returncode}: {tail}")


@dataclass
class DeliveryResult:
    sink: str
    ok: bool
    tries: int
    error: str = ""


@dataclass
class AlertPolicy:
    dedupe_window: float = 600.0
    per_minute: int = 10
    max_tries: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    queue_size: int = 1000


@dataclass
class _Counters:
    sent: int = 0
    deduplicated: int = 0
    suppressed: int = 0
    failed: int = 0
    dropped: int = 0  # queue full


class Alerter:
    """Deduplicates, rate-limits and delivers alerts on a thread of its own."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        policy: AlertPolicy | None = None,
        clock: Clock | None = None,
        sleep=None,
    ) -> None:
        self.sinks = list(sinks)
        self.policy = policy or AlertPolicy()
        self.clock = clock or SystemClock()
        self._sleep = sleep  # tests inject a no-op; tenacity's own sleep otherwise
        self._queue: queue.SimpleQueue[tuple[Alert, int] | None] = queue.SimpleQueue()
        self._queued = 0
        self._lock = threading.Lock()
        self._last_seen: dict[tuple, float] = {}
        self._sent_at: deque[float] = deque()
        self._pending_suppressed = 0
        self.counters = _Counters()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.sinks)

    def notify(self, alert: Alert) -> bool:
        """Queue an alert unless it repeats one just sent or the minute's budget is spent; never blocks."""
        if not self.sinks:
            return False
        now = self.clock.now()
        with self._lock:
            last = self._last_seen.get(alert.key())
            if last is not None and now - last < self.policy.dedupe_window:
                self.counters.deduplicated += 1
                return False
            while self._sent_at and now - self._sent_at[0] >= 60.0:
                self._sent_at.popleft()
            if len(self._sent_at) >= self.policy.per_minute:
                self.counters.suppressed += 1
                self._pending_suppressed += 1
                return False
            if self._queued >= self.policy.queue_size:
                self.counters.dropped += 1
                return False
            self._last_seen[alert.key()] = now
            self._sent_at.append(now)
            self._queued += 1
            suppressed, self._pending_suppressed = self._pending_suppressed, 0
            if len(self._last_seen) > 10_000:  # forget keys far outside the window
                cutoff = now - self.policy.dedupe_window
                self._last_seen = {k: t for k, t in self._last_seen.items() if t >= cutoff}
        self._queue.put((alert, suppressed))
        return True

    def start(self) -> Alerter:
        if self.sinks and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ewg-alerts", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (within `timeout`), then end the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def send_now(self, alert: Alert) -> list[DeliveryResult]:
        """Deliver one alert to every sink on the caller's thread (`ewg alerts test`), bypassing the guards."""
        return [self._deliver(sink, alert, suppressed=0) for sink in self.sinks]

    def _run(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is None:
                return
            alert, suppressed = entry
            with self._lock:
                self._queued -= 1
            for sink in self.sinks:
                result = self._deliver(sink, alert, suppressed)
                if result.ok:
                    self.counters.sent += 1
                else:
                    self.counters.failed += 1
                    log.warning("alert %s not delivered to %s: %s", alert.event, sink.name, result.error)

    def _deliver(self, sink: Sink, alert: Alert, suppressed: int) -> DeliveryResult:
        payload = json.dumps(alert.document(suppressed), sort_keys=True).encode()
        tries = 0
        kwargs = {"sleep": self._sleep} if self._sleep is not None else {}
        retrying = Retrying(
            stop=stop_after_attempt(self.policy.max_tries),
            wait=wait_exponential(multiplier=self.policy.base_delay, max=self.policy.max_delay),
            reraise=True,
            **kwargs,
        )
        try:
            for attempt in retrying:
                with attempt:
                    tries += 1
                    sink.deliver(payload)
        except DeliveryError as exc:
            return DeliveryResult(sink=sink.name, ok=False, tries=tries, error=str(exc))
        return DeliveryResult(sink=sink.name, ok=True, tries=tries)


@dataclass
class AlertsSettings:
    """What `[alerts]` in ewg.toml asks for, in plain values (engine.config builds it)."""

    webhook: str = ""
    command: list[str] = field(default_factory=list)
    policy: AlertPolicy = field(default_factory=AlertPolicy)

    def sinks(self) -> list[Sink]:
        found: list[Sink] = []
        if self.webhook:
            found.append(WebhookSink(self.webhook))
        if self.command:
            found.append(CommandSink(self.command))
        return found
