"""Metrics: a real /metrics scrape of a running engine agrees with the database; the cost of recovery.

The scrape goes to loopback only; every HTTP call has a timeout.
"""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.clock import FakeClock
from engine.db import queries
from engine.demo import seed_episodes
from engine.metrics_export import MetricsAddressError, MetricsServer, parse_address
from engine.runtime import Engine
from engine.verbs import Operator
from engine.workspace import init_workspace

ROOT = Path(__file__).resolve().parents[2]
TRANSIENT_TWICE = '\n[[demo.faults]]\nitem = 1\nstage = "transcribed"\nfault = "transient"\ntimes = 2\n'


def _scrape(url: str) -> dict[str, list]:
    """{family name: [(sample name, labels, value)]}, parsed by prometheus_client's own parser."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        f.name: [(s.name, dict(s.labels), s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


def _value(families, name, sample=None, **labels):
    for sname, slabels, value in families.get(name, []):
        if (sample is None or sname == sample) and slabels == labels:
            return value
    return None


TRANSIENT_TWICE_ON_3 = TRANSIENT_TWICE.replace("item = 1", "item = 3")


def _agrees_with_the_database(ws, got) -> None:
    # every finished attempt, counted here in Python from the raw rows
    rows = ws.store.read(
        "SELECT i.kind, a.stage, a.outcome, a.error_class, a.duration FROM attempts a"
        " JOIN items i ON i.id = a.item_id WHERE a.ended_at IS NOT NULL"
    )
    expected = Counter((r[0], r[1], r[2], r[3] or "") for r in rows)
    scraped = {
        (lb["kind"], lb["stage"], lb["outcome"], lb["error_class"]): v
        for name, lb, v in got["ewg_attempts"]
        if name == "ewg_attempts_total"
    }
    assert scraped == expected
    spent = Counter()
    for r in rows:
        spent[(r[0], r[1], r[2], r[3] or "")] += r[4]
    for name, lb, v in got["ewg_attempt_seconds"]:
        if name == "ewg_attempt_seconds_total":
            assert v == pytest.approx(spent[(lb["kind"], lb["stage"], lb["outcome"], lb["error_class"])])

    counts = queries.counts(ws.store)
    for kind in ("episode", "clip"):
        for status, n in counts[kind]["by_status"].items():
            got_n = sum(v for _n, lb, v in got["ewg_items"] if lb["kind"] == kind and lb["status"] == status)
            assert got_n == n, (kind, status)

    # recovery success and time to recovery match `ewg metrics`
    m = queries.metrics(ws.store)
    key = {"kind": "episode", "stage": "transcribed"}
    assert (
        _value(got, "ewg_recovery_failed_stages", "ewg_recovery_failed_stages_total", **key) == m["failures"]
    )
    assert (
        _value(got, "ewg_recovery_recovered_stages", "ewg_recovery_recovered_stages_total", **key)
        == m["recovered"]
    )
    assert (
        _value(got, "ewg_time_to_recovery_seconds", "ewg_time_to_recovery_seconds_count", **key)
        == m["recovered"]
    )
    ttr = _value(got, "ewg_time_to_recovery_seconds", "ewg_time_to_recovery_seconds_sum", **key)
    assert ttr == pytest.approx(m["time_to_recovery_s"]["mean"] * m["recovered"])
    inf = _value(got, "ewg_time_to_recovery_seconds", "ewg_time_to_recovery_seconds_bucket", le="+Inf", **key)
    assert inf == m["recovered"]


def test_a_scrape_of_a_running_engine_agrees_with_the_database(make_demo):
    ws = make_demo(count=2, extra=TRANSIENT_TWICE + TRANSIENT_TWICE_ON_3)
    server = MetricsServer(ws.store, parse_address("127.0.0.1:0")).start()
    engine = Engine(ws, workers=2).start()
    try:
        during = _scrape(server.url)  # mid-run: the engine is live and work is pending
        assert _value(during, "ewg_engines") == 1
        assert sum(v for _n, labels, v in during["ewg_items"] if labels["status"] != "done") > 0
        assert engine.run_until_idle(timeout=60)
        first = _scrape(server.url)
        _agrees_with_the_database(ws, first)
        assert _value(first, "ewg_attempts", "ewg_attempts_total", **FAILED_TRANSCRIBED) == 2

        seed_episodes(ws, 2, start=3)  # more work: the next scrape reads only the new attempt rows
        engine.wake()
        assert engine.run_until_idle(timeout=60)
        time.sleep(ws.config.health.interval * 2)  # one health sample at least
        after = _scrape(server.url)
    finally:
        engine.stop()
        server.stop()
    _agrees_with_the_database(ws, after)
    assert _value(after, "ewg_attempts", "ewg_attempts_total", **FAILED_TRANSCRIBED) == 4
    key = {"kind": "episode", "stage": "transcribed"}
    assert _value(after, "ewg_recovery_recovered_stages", "ewg_recovery_recovered_stages_total", **key) == 2
    assert _value(after, "ewg_items", kind="episode", stage="", status="done") == 4

    # health gauges are the newest sample
    sample = ws.store.read_one("SELECT disk_free_mb, memory_percent FROM health ORDER BY at DESC LIMIT 1")
    assert _value(after, "ewg_disk_free_bytes") == pytest.approx(sample["disk_free_mb"] * 2**20)
    assert _value(after, "ewg_memory_used_percent") == pytest.approx(sample["memory_percent"])
    assert _value(after, "ewg_paused") == 0 and _value(after, "ewg_rescues") is None  # no rescue happened


FAILED_TRANSCRIBED = {
    "kind": "episode",
    "stage": "transcribed",
    "outcome": "failed",
    "error_class": "transient",
}


def test_counters_never_fall_when_history_is_pruned(make_demo):
    ws = make_demo(count=1, extra=TRANSIENT_TWICE)
    engine = Engine(ws, workers=1).start()
    assert engine.run_until_idle(timeout=60)
    engine.stop()
    server = MetricsServer(ws.store, parse_address("127.0.0.1:0")).start()
    try:
        before = _scrape(server.url)
        with ws.store.write() as conn:  # what [retention] does to old failed runs
            conn.execute("DELETE FROM attempts WHERE outcome = 'failed'")
        after = _scrape(server.url)
    finally:
        server.stop()
    assert _value(before, "ewg_attempts", "ewg_attempts_total", **FAILED_TRANSCRIBED) == 2
    assert _value(after, "ewg_attempts", "ewg_attempts_total", **FAILED_TRANSCRIBED) == 2


def test_services_and_rescues_are_exported(make_demo):
    ws = make_demo(count=1)
    item = ws.store.read_one("SELECT id FROM items")[0]
    with ws.store.write() as conn:
        conn.execute(
            "INSERT INTO attempts (item_id, stage, number, worker, lease_token, started_at, ended_at, outcome,"
            " duration, spent) VALUES (?, 'discovered', 1, 'h:1:1', 1, 10.0, 14.0, 'dead', 4.0, 0)",
            (item,),
        )
        conn.execute(
            "INSERT INTO services (name, ok, message, checked_at, since) VALUES ('llm', 0, 'down', 1, 1)"
        )
    server = MetricsServer(ws.store, parse_address("127.0.0.1:0")).start()
    try:
        got = _scrape(server.url)
    finally:
        server.stop()
    assert _value(got, "ewg_rescues", "ewg_rescues_total", kind="episode", stage="discovered") == 1
    assert _value(got, "ewg_service_up", service="llm") == 0


def test_bad_metrics_addresses_say_what_to_write():
    for text in ("9464", "localhost", "host:port", "::1:9464", "[nope]:9464", "127.0.0.1:70000"):
        with pytest.raises(MetricsAddressError):
            parse_address(text)
    assert str(parse_address("[::1]:9464")) == "[::1]:9464"
    assert parse_address(":9464").host == "0.0.0.0"


def test_cost_of_recovery_counts_failed_runs_retries_rescues_and_paused_time(tmp_path):
    clock = FakeClock(1_800_000_000.0)
    ws = init_workspace(tmp_path / "ws", clock=clock)
    seed_episodes(ws, 2)
    ep1, ep2 = [r[0] for r in ws.store.read("SELECT id FROM items ORDER BY id")]
    t0 = clock.now()

    def attempt(item, number, outcome, end, duration, error_class=None):
        with ws.store.write() as conn:
            conn.execute(
                "INSERT INTO attempts (item_id, stage, number, worker, lease_token, started_at, ended_at,"
                " outcome, error_class, duration, spent) VALUES (?, 'transcribed', ?, 'h:1:1', ?, ?, ?, ?, ?, ?, 1)",
                (item, number, number, end - duration, end, outcome, error_class, duration),
            )

    attempt(ep1, 1, "failed", t0 + 10, 8.0, "transient")
    attempt(ep1, 2, "failed", t0 + 30, 12.0, "transient")
    attempt(ep1, 3, "succeeded", t0 + 50, 15.0)
    attempt(ep2, 1, "dead", t0 + 60, 5.0)
    attempt(ep2, 1, "succeeded", t0 + 80, 10.0)
    attempt(ep2, 1, "succeeded", t0 - 86400, 99.0)  # a day before the window
    Operator(ws, actor="alice").pause(reason="maintenance")
    clock.advance(100)
    Operator(ws, actor="alice").unpause()
    clock.advance(100)  # 200 s window: 100 s paused, 100 s claiming
    cost = queries.recovery_cost(ws.store, since=t0, now=clock.now())
    t = cost["totals"]
    assert (t["runs"], t["failed_runs"], t["retries"], t["rescues"]) == (5, 2, 2, 1)
    assert (t["failed_seconds"], t["retry_seconds"], t["rescue_seconds"]) == (20.0, 27.0, 5.0)
    assert t["wasted_share"] == pytest.approx(25.0 / 50.0)
    assert cost["by_error_class"] == [
        {"kind": "episode", "stage": "transcribed", "error_class": "transient", "runs": 2, "seconds": 20.0},
        {"kind": "episode", "stage": "transcribed", "error_class": "dead", "runs": 1, "seconds": 5.0},
    ]
    p = cost["paused"]
    assert (p["seconds"], p["operator_seconds"], p["resource_seconds"], p["periods"]) == (
        100.0,
        100.0,
        0.0,
        1,
    )
    assert p["runs_lost"] == pytest.approx(2.0)  # 2 successes in 100 s claiming -> 2 not done in 100 s paused
    everything = queries.recovery_cost(ws.store, since=None, now=clock.now())
    assert everything["totals"]["runs"] == 6
    text = queries.recovery_cost_summary(cost)
    assert text.startswith(
        "2 failed run(s) took 20.0 s, 2 retry run(s) took 27.0 s, 1 rescue(s) threw away 5.0 s"
    )
    assert "(50% of stage time); paused 1 m 40 s in 1 period(s), about 2 stage run(s) not done" in text
    ws.close()


def _ewg(*args, timeout=60):
    proc = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_ewg_metrics_since_narrows_every_figure(make_demo):
    ws = make_demo(count=2, extra=TRANSIENT_TWICE)
    engine = Engine(ws, workers=2).start()
    assert engine.run_until_idle(timeout=60)
    engine.stop()
    runs = ws.store.read_one("SELECT COUNT(*) FROM attempts")[0]
    item = ws.store.read_one("SELECT id FROM items ORDER BY id")[0]
    old = time.time() - 2 * 86400
    with ws.store.write() as conn:  # a failed run two days ago
        conn.execute(
            "INSERT INTO attempts (item_id, stage, number, worker, lease_token, started_at, ended_at, outcome,"
            " error_class, duration, spent) VALUES (?, 'enriched', 1, 'h:1:1', 99, ?, ?, 'failed', 'persistent', 7.0, 1)",
            (item, old - 7, old),
        )
    root = str(ws.root)
    ws.close()

    code, out, err = _ewg("--workspace", root, "metrics", "--json")
    assert code == 0, err
    everything = json.loads(out)
    assert everything["since"] is None
    assert everything["recovery_cost"]["totals"]["runs"] == runs + 1
    assert everything["recovery_cost"]["totals"]["failed_runs"] == 3 and everything["failures"] == 2

    code, out, err = _ewg("--workspace", root, "metrics", "--since", "1d", "--json")
    assert code == 0, err
    recent = json.loads(out)
    assert recent["since"].endswith("Z")
    assert recent["recovery_cost"]["totals"]["runs"] == runs
    assert recent["recovery_cost"]["totals"]["failed_runs"] == 2 and recent["failures"] == 1

    code, out, err = _ewg("--workspace", root, "metrics", "--since", "2099-01-01T00:00")
    assert code == 0, err
    assert "since 2099-01-01T00:00:00Z:" in out
    assert "cost of recovery: 0 failed run(s) took 0.0 s, 0 retry run(s) took 0.0 s" in out

    code, out, err = _ewg("--workspace", root, "metrics", "--since", "1h")
    assert code == 0, err
    assert "cost of recovery: 2 failed run(s)" in out
    assert "episode  transcribed  transient  2" in out

    for bad in ("yesterday", "-1h", "0m", "10"):
        code, _out, err = _ewg("--workspace", root, "metrics", "--since", bad)
        assert code == 2 and "--since" in err and "Traceback" not in err, (bad, err)


def _start_run(root: str, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ewg_tui.cli", "--workspace", root, "run", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _w, _x = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("Prometheus metrics at "):
                return proc, line.split(" at ", 1)[1].strip()
            if not line and proc.poll() is not None:
                break
    proc.kill()
    raise AssertionError(f"ewg run did not announce its metrics: {proc.stderr.read()}")


def test_ewg_run_serves_metrics_and_stops_on_sigterm(make_demo):
    ws = make_demo(count=2, speed=0.2)
    root = str(ws.root)
    ws.close()
    proc, url = _start_run(root, "--metrics", "127.0.0.1:0")
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        got = _scrape(url)
        assert _value(got, "ewg_engines") == 1
        assert sum(v for _n, _lb, v in got["ewg_items"] if _lb["kind"] == "episode") == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_a_busy_or_bad_metrics_address_exits_2_before_the_engine_starts(make_demo):
    ws = make_demo(count=1)
    root = ws.root
    ws.close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _out, err = _ewg(
            "--workspace", str(root), "run", "--until-idle", "--metrics", f"127.0.0.1:{port}"
        )
        assert code == 2 and "Traceback" not in err
        assert f"cannot serve metrics on 127.0.0.1:{port}" in err and "in use" in err
        config = root / "ewg.toml"  # the same from [engine] metrics
        config.write_text(
            config.read_text().replace('metrics = ""', f'metrics = "127.0.0.1:{port}"', 1), encoding="utf-8"
        )
        code, _out, err = _ewg("--workspace", str(root), "run", "--until-idle")
        assert code == 2 and f"cannot serve metrics on 127.0.0.1:{port}" in err
    code, _out, err = _ewg("--workspace", str(root), "run", "--until-idle", "--metrics", "localhost")
    assert code == 2 and "is not HOST:PORT" in err and "Traceback" not in err
    from engine.workspace import open_workspace

    ws = open_workspace(root)
    try:  # nothing ran: the item is where it was, and no engine ever registered
        assert ws.store.read_one("SELECT COUNT(*) FROM attempts")[0] == 0
        assert ws.store.read_one("SELECT COUNT(*) FROM engines")[0] == 0
    finally:
        ws.close()
