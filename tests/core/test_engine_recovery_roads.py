"""Recovery roads that were wrong (issue 11): each test failed on the code before its fix."""

from __future__ import annotations

from engine import queries
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
