"""Prometheus metrics: `ewg run --metrics HOST:PORT` (or `[engine] metrics`) serves `/metrics`.

The numbers come from the database, read when Prometheus scrapes (ARCHITECTURE.md contract 1: one
source of truth), not from counters bumped in the hot path: every engine sharing the database, and
one that restarted, tell the same story, and a stage run costs nothing extra. `EwgCollector` reads
through `engine.db.queries.metrics_snapshot` on a query-only Reader of its own, so a scrape never
blocks the engine's writes (WAL), and two scrapes at once take turns on it.

The collector keeps its totals between scrapes and reads only the attempt rows written since the
last one (queries.metrics_snapshot says why), so counters only grow: history that `ewg prune`
([retention]) deletes later stays counted. A new exporter (an `ewg run` restarted) counts the rows
the database still holds, which Prometheus reads as a counter reset (rate() and increase() handle
it). Every exporter on one database serves the same totals: scrape one, or aggregate with max().
The series are listed, with example PromQL, in README.md ("Metrics").
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.utils import floatToGoString

from .clock import Clock, SystemClock
from .db import Store, queries

log = logging.getLogger("ewg.metrics")

PREFIX = "ewg"
RECOVERY_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0)


class MetricsAddressError(ValueError):
    """A `HOST:PORT` that cannot be served; the message names the problem and the fix."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """`HOST:PORT`, `:PORT` (all interfaces) or `[IPv6]:PORT`."""
    value = text.strip()
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise MetricsAddressError(
            f"metrics address {text!r} is not HOST:PORT; write e.g. 127.0.0.1:9464 (or :9464 for all interfaces)"
        )
    port = int(port_text)
    if not 0 <= port < 65536:  # 0: any free port (the engine prints the one it got)
        raise MetricsAddressError(f"metrics port {port} is out of range; choose one from 1 to 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise MetricsAddressError(f"metrics address {text!r}: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise MetricsAddressError(
            f"metrics address {text!r}: put an IPv6 address in brackets, e.g. [::1]:9464"
        )
    return Address(host or "0.0.0.0", port)


@dataclass
class Totals:
    """What the collector has counted so far: attempts by labels, and every (item, stage) that failed.

    Kept between scrapes so each scrape reads only the attempt rows written since the last one."""

    after_id: int = 0
    attempts: dict[tuple[str, str, str, str], list[float]] = field(default_factory=dict)  # [count, seconds]
    recoveries: dict[tuple[str, str], dict] = field(default_factory=dict)  # (item, stage) -> kind, times

    def add(self, snap: queries.MetricsSnapshot) -> None:
        for a in snap.attempts:
            key = (a["kind"], a["stage"], a["outcome"], a["error_class"])
            entry = self.attempts.setdefault(key, [0, 0.0])
            entry[0] += a["count"]
            entry[1] += a["seconds"]
        for r in snap.recoveries:  # each pair is recomputed whole by the read: replace it
            self.recoveries[(r["item_id"], r["stage"])] = r
        self.after_id = snap.last_id


class EwgCollector:
    """A custom collector: each `collect()` is one database read, shaped into metric families."""

    def __init__(self, store: Store, clock: Clock | None = None) -> None:
        self._store = store
        self._clock = clock or SystemClock()
        self._reader = None
        self._lock = threading.Lock()
        self._totals = Totals()

    def close(self) -> None:
        with self._lock:
            self._reader = None  # its connection is the Store's, closed with it

    def read(self) -> tuple[queries.MetricsSnapshot, Totals]:
        with self._lock:
            if self._reader is None:
                self._reader = self._store.reader()
            snap = queries.metrics_snapshot(self._reader, self._clock.now(), after_id=self._totals.after_id)
            if (
                snap.last_id < self._totals.after_id
            ):  # the newest rows were deleted: count again from the start
                self._totals = Totals()
                snap = queries.metrics_snapshot(self._reader, self._clock.now())
            self._totals.add(snap)
            return snap, self._totals

    def collect(self) -> Iterator[Metric]:
        began = time.perf_counter()
        snap, totals = self.read()
        yield from families(snap, totals)
        took = GaugeMetricFamily(
            f"{PREFIX}_metrics_read_seconds", "Time the last scrape spent reading the database."
        )
        took.add_metric([], time.perf_counter() - began)
        yield took


def families(snap: queries.MetricsSnapshot, totals: Totals) -> Iterator[Metric]:
    """The metric families of one scrape (README.md "Metrics" lists them)."""
    labels = ["kind", "stage", "outcome", "error_class"]
    attempts = CounterMetricFamily(
        f"{PREFIX}_attempts", "Finished stage attempts, by stage, outcome and error class.", labels=labels
    )
    seconds = CounterMetricFamily(
        f"{PREFIX}_attempt_seconds",
        "Seconds spent in finished attempts, by stage, outcome and error class.",
        labels=labels,
    )
    rescues = CounterMetricFamily(
        f"{PREFIX}_rescues",
        "Runs taken back from a worker that died (no attempt spent).",
        labels=["kind", "stage"],
    )
    rescue_counts: dict[tuple[str, str], int] = defaultdict(int)
    for key, (count, spent) in sorted(totals.attempts.items()):
        attempts.add_metric(list(key), count)
        seconds.add_metric(list(key), spent)
        if key[2] in queries.RESCUE_OUTCOMES:
            rescue_counts[key[:2]] += count
    for key, n in sorted(rescue_counts.items()):
        rescues.add_metric(list(key), n)
    yield from (attempts, seconds, rescues)

    items = GaugeMetricFamily(
        f"{PREFIX}_items",
        "Items by kind, the stage they wait for or run (empty once done) and status.",
        labels=["kind", "stage", "status"],
    )
    for i in snap.items:
        items.add_metric([i["kind"], i["stage"], i["status"]], i["count"])
    yield items

    failed = CounterMetricFamily(
        f"{PREFIX}_recovery_failed_stages",
        "Stage runs (item, stage) that failed at least once.",
        labels=["kind", "stage"],
    )
    recovered = CounterMetricFamily(
        f"{PREFIX}_recovery_recovered_stages",
        "Stage runs that failed and then succeeded (recovery success).",
        labels=["kind", "stage"],
    )
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    failed_counts: dict[tuple[str, str], int] = defaultdict(int)
    for r in totals.recoveries.values():
        key = (r["kind"], r["stage"])
        failed_counts[key] += 1
        if r["recovered_at"] is not None:
            times[key].append(max(0.0, r["recovered_at"] - r["failed_at"]))
    ttr = HistogramMetricFamily(
        f"{PREFIX}_time_to_recovery_seconds",
        "From a stage's first failure to its success, for stage runs that recovered.",
        labels=["kind", "stage"],
    )
    for key in sorted(failed_counts):
        failed.add_metric(list(key), failed_counts[key])
        recovered.add_metric(list(key), len(times[key]))
        values = times[key]
        buckets = [(floatToGoString(b), sum(1 for v in values if v <= b)) for b in RECOVERY_BUCKETS]
        ttr.add_metric(list(key), buckets + [("+Inf", len(values))], sum_value=sum(values))
    yield from (failed, recovered, ttr)

    yield from _health(snap)


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    """A gauge without labels; no sample at all while the value is unknown (no health sample yet)."""
    g = GaugeMetricFamily(f"{PREFIX}_{name}", doc)
    if value is not None:
        g.add_metric([], value)
    return g


def _health(snap: queries.MetricsSnapshot) -> Iterator[Metric]:
    h = snap.health or {}
    mb = 2**20
    yield _gauge(
        "disk_free_bytes",
        "Free disk of the items root (newest health sample).",
        None if h.get("disk_free_mb") is None else h["disk_free_mb"] * mb,
    )
    yield _gauge(
        "database_disk_free_bytes",
        "Free disk of the database's folder (newest health sample).",
        None if h.get("db_disk_free_mb") is None else h["db_disk_free_mb"] * mb,
    )
    yield _gauge(
        "memory_used_percent", "Memory in use on the engine's host, percent.", h.get("memory_percent")
    )
    yield _gauge("cpu_percent", "CPU in use on the engine's host, percent.", h.get("cpu_percent"))
    yield _gauge(
        "disk_time_to_full_seconds", "Projected seconds until the disk is full.", h.get("time_to_full_s")
    )
    yield _gauge("health_sample_timestamp_seconds", "When the newest health sample was taken.", h.get("at"))
    services = GaugeMetricFamily(
        f"{PREFIX}_service_up", "1 while a [services.NAME] probe answers, else 0.", labels=["service"]
    )
    for s in snap.services:
        services.add_metric([s["name"]], 1.0 if s["ok"] else 0.0)
    yield services
    yield _gauge("engines", "Engine processes with a fresh heartbeat on this database.", snap.engines)
    yield _gauge("paused", "1 while an operator paused processing (`ewg pause`).", float(snap.paused))
    yield _gauge(
        "resource_paused", "1 while claiming is paused for disk or memory.", float(snap.resource_pause)
    )
    yield _gauge("early_warnings", "Early warnings in force (engine.forecast).", snap.warnings)


class MetricsServer:
    """The HTTP endpoint; `start()` binds at once, so a bad address fails before the engine starts."""

    def __init__(self, store: Store, address: Address, clock: Clock | None = None) -> None:
        self.address = address
        self.collector = EwgCollector(store, clock)
        self.registry = CollectorRegistry(auto_describe=False)  # no database read at registration
        self.registry.register(self.collector)
        self._httpd = None
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsServer:
        try:
            self._httpd, self._thread = start_http_server(
                self.address.port, addr=self.address.host, registry=self.registry
            )
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise MetricsAddressError(
                f"cannot serve metrics on {self.address}: {why}. Choose a free port and an address of "
                "this host (e.g. --metrics 127.0.0.1:9464), or stop what is listening there."
            ) from None
        return self

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1]) if self._httpd else self.address.port

    @property
    def url(self) -> str:
        return f"http://{Address(self.address.host, self.port)}/metrics"

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        self.collector.close()
