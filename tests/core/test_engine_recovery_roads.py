"""Recovery roads that were wrong (issue 11): each test failed on the code before its fix."""

from __future__ import annotations

import json
import sys

from engine.db import queries
from engine.runtime import Engine


def test_a_resource_pause_is_one_event_however_many_samples_it_lasts(make_demo):
    ws = make_demo(count=1)
    free = {"mb": 10.0}
    eng = Engine(ws, workers=1, disk_free_mb=lambda path: free["mb"])
    for n in range(5):  # five samples below the floor, each with a different free figure
        free["mb"] = 10.0 + n
        eng.health.sample()
    free["mb"] = 100_000.0
    eng.health.sample()
    verbs = [e["verb"] for e in queries.events(ws.store) if e["verb"].startswith("resource_")]
    assert sorted(verbs) == ["resource_pause", "resource_resume"]
    assert queries.overview(ws.store, ws.clock.now()).resource_pause == ""


def test_the_stuck_count_is_stalled_and_timed_out_work_only(make_demo):
    ws = make_demo(count=4)
    ids = [r["id"] for r in ws.store.read("SELECT id FROM items ORDER BY id")]
    with ws.store.write() as conn:
        for item_id, verdict in zip(ids, ("STALLED", "TIMED OUT", "SLOW", "DEAD")):
            conn.execute("UPDATE items SET status='running', verdict=? WHERE id=?", (verdict, item_id))
    assert queries.overview(ws.store, ws.clock.now()).stuck == 2


def test_a_command_that_ran_out_of_disk_is_resource_whatever_its_exit_code(make_demo):
    script = "import sys; sys.stderr.write('ffmpeg: write failed: No space left on device\\n'); sys.exit(65)"
    extra = (
        '\n[stages.episode.discovered]\nkind = "command"\n'
        f"command = {json.dumps([sys.executable, '-c', script])}\n"
    )
    ws = make_demo(count=1, extra=extra)
    eng = Engine(ws, workers=1)
    eng.start()
    try:
        deadline = ws.clock.now() + 20
        while (
            not ws.store.read("SELECT 1 FROM attempts WHERE stage='discovered'") and ws.clock.now() < deadline
        ):
            import time

            time.sleep(0.05)
    finally:
        eng.stop()
    first = ws.store.read_one("SELECT error_class, spent FROM attempts WHERE stage='discovered' ORDER BY id")
    assert first["error_class"] == "resource"  # 65 alone would be `persistent` (sysexits EX_DATAERR)
    assert first["spent"] == 0


def test_claims_check_free_space_at_claim_time_including_what_running_stages_will_write(make_demo):
    ws = make_demo(count=2)
    free = {"mb": 100_000.0}
    eng = Engine(ws, workers=1, disk_free_mb=lambda path: free["mb"])
    floor = ws.config.health.disk_critical_free_mb
    assert eng.health.room_to_claim()
    eng.health.forecaster.output_mb = {("episode", "discovered"): 600.0}
    free["mb"] = floor + 500.0  # above the floor, but not by one stage's typical output
    eng.health._room_checked = -1e18  # the next claim looks again (checks are 0.1 s apart)
    assert eng.health.room_to_claim()  # room for something...
    assert ("episode", "discovered") in eng.health.held_stages  # ...but not for a 600 MB output
    free["mb"] = floor - 1.0  # a burst between two health samples
    eng.health._room_checked = -1e18
    assert not eng.health.room_to_claim() and not eng.claiming_allowed()
    assert "critical floor" in (eng.health.resource_pause or "")
