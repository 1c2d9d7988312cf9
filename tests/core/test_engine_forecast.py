"""Early warnings: each check on the history it means, then the engine's wiring end to end."""

from __future__ import annotations

import json

from engine import forecast
from engine.db import queries
from engine.forecast import Forecaster, WarningKind

RENDER, CLIP = ("episode", "rendered"), ("clip", "rendered")


def test_disk_forecast_throttles_the_heaviest_stage_until_the_rest_fits():
    w = forecast.disk_forecast(
        free_mb=3000, floor_mb=1000, queued={RENDER: 10, CLIP: 20}, output_mb={RENDER: 500.0, CLIP: 50.0}
    )
    assert w is not None and w.kind == WarningKind.DISK
    assert w.throttle == (RENDER,)  # 5000 MB of renders do not fit in 2000; the 1000 MB of clips do
    assert "6000 MB" in w.message and "episode/rendered: 10 x 500 MB" in w.evidence


def test_disk_forecast_is_quiet_when_the_work_fits_or_sizes_are_unknown():
    assert forecast.disk_forecast(5000, 1000, {RENDER: 2}, {RENDER: 500.0}) is None
    assert forecast.disk_forecast(1500, 1000, {RENDER: 10}, {}) is None


def test_a_jump_in_failure_rate_is_a_warning_a_steady_rate_is_not():
    steady = [n % 4 == 0 for n in range(80)]  # 25% all along
    assert forecast.failure_rate_jump(RENDER, steady) is None
    jump = [False] * 60 + [n % 2 == 0 for n in range(20)]  # 0% then 50%
    w = forecast.failure_rate_jump(RENDER, jump)
    assert w is not None and "50% of its last 20" in w.message and "0% before" in w.evidence
    assert forecast.failure_rate_jump(RENDER, [True] * 5) is None  # too little history


def test_a_flapping_service_and_a_steady_one():
    assert forecast.service_flapping("llm", 2) is None
    w = forecast.service_flapping("llm", 4)
    assert w is not None and w.subject == "llm" and "4 times" in w.message


def test_memory_climbing_toward_the_limit_is_foreseen():
    climbing = [(t * 60.0, 50.0 + t * 2) for t in range(10)]  # 2 points a minute, at 68% now
    w = forecast.memory_climb(climbing, limit_percent=90.0)
    assert w is not None and "about 11 min" in w.message
    flat = [(t * 60.0, 60.0) for t in range(10)]
    assert forecast.memory_climb(flat, 90.0) is None
    slow = [(t * 60.0, 50.0 + t * 0.01) for t in range(10)]  # would take days
    assert forecast.memory_climb(slow, 90.0) is None


def test_one_slow_host_is_named():
    durations = {"gpu1": [10.0] * 6, "gpu2": [11.0] * 6, "old": [40.0] * 6}
    [w] = forecast.slow_hosts(RENDER, durations)
    assert w.subject == "old:episode/rendered" and "3.8x slower" in w.message


def _seed_history(ws, now):
    """Ten queued renders and finished render checkpoints of 600 MB each."""
    store = ws.store
    ids = [r["id"] for r in store.read("SELECT id FROM items ORDER BY id")]
    manifest = json.dumps({"files": [{"path": "page.mp4", "size": 600 * 2**20, "sha256": "0"}]})
    with store.write() as conn:
        conn.execute(
            "UPDATE items SET stage='editorial', next_stage='rendered', status='queued' WHERE id IN (%s)"
            % ",".join("?" * len(ids[:-1])),
            ids[:-1],
        )
        conn.execute(
            "INSERT INTO checkpoints (item_id, stage, manifest, created_at) VALUES (?, 'rendered', ?, ?)",
            (ids[-1], manifest, now),
        )
    return ids


def test_the_forecaster_publishes_warnings_records_new_ones_once_and_clears_them(make_demo):
    ws = make_demo(count=11)
    now = ws.clock.now()
    _seed_history(ws, now)
    fc = Forecaster(ws.store, memory_limit_percent=90, disk_floor_mb=1000)
    [new] = fc.run(now, free_mb=3000)
    assert new.kind == WarningKind.DISK and fc.throttled == {RENDER}
    assert [w["kind"] for w in queries.overview(ws.store, now).warnings] == ["disk"]
    assert fc.run(now + 30, free_mb=3000) == []  # still true: not recorded again
    events = [e for e in queries.events(ws.store) if e["verb"] == "early_warning"]
    assert len(events) == 1 and "600 MB" in events[0]["reason"]
    assert fc.run(now + 60, free_mb=100_000) == [] and fc.throttled == set()
    assert queries.overview(ws.store, now).warnings == []


def test_a_throttled_stage_is_not_claimed_but_others_are(make_demo):
    from engine.runtime import Engine

    ws = make_demo(count=3)
    eng = Engine(ws, workers=1)
    eng.health.forecaster.current = {
        "disk:items": forecast.EarlyWarning(
            kind=WarningKind.DISK,
            subject="items",
            message="m",
            evidence="e",
            suggestion="s",
            throttle=(("episode", "discovered"),),
        )
    }
    assert ("episode", "discovered") in eng.health.held_stages
    with ws.store.write() as conn:
        claims = ws.store.claim_batch(conn, "t:1:1", ws.clock.now(), 30.0, sorted(eng.health.held_stages), 3)
    assert claims == []  # every seeded episode waits for `discovered`


def test_early_warnings_become_alerts(make_demo):
    from engine.alert_watch import AlertWatch
    from engine.alerts import AlertEvent
    from engine.clock import FakeClock

    ws = make_demo(count=1)
    got = []

    class Recorder:
        enabled = True

        def notify(self, alert):
            got.append(alert)
            return True

    watch = AlertWatch(ws.store, Recorder(), FakeClock(), host="h", owner="h:1:0")
    watch.prime()
    with ws.store.write() as unit:
        unit.record_event(
            1.0, "engine", "early_warning", selection="llm", reason="llm flaps", result="check llm"
        )
    assert watch.tick() == 1
    assert got[0].event == AlertEvent.EARLY_WARNING and got[0].suggestion == "check llm"
