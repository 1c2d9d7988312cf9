"""The runtime's contracts: fencing, retries that survive restarts, verdicts, stopping, health."""

from __future__ import annotations

import json
import os
import threading
import time

import psutil
import pytest
from ewgtest import HealthService

from engine import checkpoints, stages
from engine.db import queries
from engine.runtime import Engine
from engine.stages import CancelToken
from engine.verbs import Operator
from engine.workspace import add_episode, open_workspace


def wait_for(predicate, timeout=15.0, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


def item(ws, item_id):
    return queries.item(ws.store, item_id)


def python_stage(kind, stage, fn, settings=None, **options):
    """A [stages.KIND.STAGE] table running stagelib:FN; `settings` are stage keys, the rest options."""
    keys = "".join(f"\n{k} = {json.dumps(v)}" for k, v in (settings or {}).items())
    opts = "".join(f"\n{k} = {json.dumps(v)}" for k, v in options.items())
    return (
        f'\n[stages.{kind}.{stage}]\nkind = "python"\ncallable = "stagelib:{fn}"{keys}'
        + (f"\n[stages.{kind}.{stage}.options]{opts}" if opts else "")
        + "\n"
    )


def test_demo_runs_to_done_with_checkpoints_and_clips(make_demo):
    ws = make_demo(count=3)
    eng = Engine(ws, workers=3).start()
    assert eng.run_until_idle(timeout=60)
    eng.stop()
    doc = queries.status(ws.store)
    assert {e["status"] for e in doc["episodes"]} == {"done"}
    assert len(doc["clips"]) == 6 and {c["status"] for c in doc["clips"]} == {"done"}
    for row in ws.store.read("SELECT item_id, stage, manifest FROM checkpoints"):
        manifest = json.loads(row["manifest"])
        assert manifest["files"], row["stage"]
        assert checkpoints.verify(ws.item_dir(row["item_id"]) / row["stage"], manifest) == []
    assert checkpoints.leftovers(ws.items_root) == []


def test_zombie_completion_is_refused_by_fencing(make_demo):
    ws = make_demo(count=1)
    eng = Engine(ws, workers=0)
    claim = ws.store.claim("zombie:1:1", time.time(), 30)
    run_ctx_tmp = checkpoints.temp_dir(ws.item_dir(claim.item_id), claim.stage, claim.lease_token)
    (run_ctx_tmp / "late.txt").write_text("late work")
    # the watchdog decides the owner is dead and rescues the item (token bumped)
    assert eng.rescue(claim.item_id, claim.lease_token, 0, "dead", "test", time.time())
    from engine.runtime import Run

    run = Run(claim, CancelToken(), threading.current_thread(), 0)
    ctx = eng._context(claim, run)
    (ctx.output_dir / "late.txt").write_text("late work")
    seen = []
    eng.on_event = seen.append
    eng._complete(run, ctx)
    eng.dispatch_once()
    assert [e.kind for e in seen] == ["lost"]
    row = item(ws, claim.item_id)
    assert row["status"] == "queued" and row["stage"] is None
    assert not (ws.item_dir(claim.item_id) / claim.stage).exists()
    assert ws.store.read("SELECT * FROM checkpoints") == []
    # and the heartbeat of the zombie is refused too
    assert ws.store.heartbeat(
        [(claim.item_id, claim.lease_token, 0.5, "", time.time())], time.time(), 30
    ) == {claim.item_id: "LOST"}


def test_backoff_wait_survives_a_restart(make_demo, tmp_path):
    ws = make_demo(
        count=1,
        extra=python_stage("episode", "discovered", "fail_transient"),
        base_delay="30.0",
        max_delay="60.0",
    )
    eng = Engine(ws, workers=1).start()
    row = wait_for(
        lambda: (r := item(ws, ws.store.read("SELECT id FROM items")[0]["id"]))["status"] == "retrying" and r
    )
    eng.stop()
    ws.close()
    ws2 = open_workspace(ws.root)
    again = item(ws2, row["id"])
    assert again["status"] == "retrying" and again["attempts"] == 1
    assert again["next_attempt_at"] == row["next_attempt_at"] and again["next_attempt_at"] > time.time() + 20
    eng2 = Engine(ws2, workers=1).start()
    time.sleep(0.5)  # not claimed before its time
    assert item(ws2, row["id"])["attempts"] == 1
    eng2.stop()
    attempts = queries.attempts(ws2.store, row["id"])
    assert [a["outcome"] for a in attempts] == ["failed"] and attempts[0]["error_class"] == "transient"
    ws2.close()


def test_stalled_is_detected_within_threshold_plus_one_check(make_demo):
    ws = make_demo(
        count=1,
        extra=python_stage("episode", "discovered", "hang_respecting_cancel"),
        stall_after="1.0",
        dead_after="0.8",  # below the stall threshold, as engine.config requires
        check_interval="0.2",
    )
    item_id = ws.store.read("SELECT id FROM items")[0]["id"]
    eng = Engine(ws, workers=1).start()
    wait_for(lambda: item(ws, item_id)["status"] == "running")
    frozen_at = item(ws, item_id)["progress_at"]
    seen = wait_for(
        lambda: ws.store.read_one("SELECT at FROM events WHERE verb='verdict' AND result='STALLED'"),
        timeout=10,
    )
    eng.stop()
    assert seen["at"] - frozen_at <= 1.0 + 0.2 + 0.3  # threshold + one check (+ heartbeat slack)
    attempts = queries.attempts(ws.store, item_id)
    assert attempts[0]["outcome"] == "stalled"


def test_timed_out_stage_is_cancelled_and_retried(make_demo):
    extra = python_stage("episode", "discovered", "hang_respecting_cancel", {"timeout": 0.6})
    ws = make_demo(count=1, extra=extra, stall_after="100")
    item_id = ws.store.read("SELECT id FROM items")[0]["id"]
    eng = Engine(ws, workers=1).start()
    wait_for(lambda: any(a["outcome"] == "timed_out" for a in queries.attempts(ws.store, item_id)))
    eng.stop(force=True)
    first = queries.attempts(ws.store, item_id)[0]
    assert first["outcome"] == "timed_out" and first["error_class"] == "transient"
    assert "retry 2/3" in first["decision"]


def test_an_attempt_row_is_written_once_when_the_attempt_ends(make_demo):
    ws = make_demo(count=1)
    eng = Engine(ws, workers=0)
    started = time.time()
    claim = ws.store.claim("worker:1:1", started, 30)
    # while it runs, the attempt lives in the lease only, and reads show it from there
    assert ws.store.read("SELECT * FROM attempts") == []
    running = queries.attempts(ws.store, claim.item_id)
    assert len(running) == 1 and running[0]["outcome"] is None and running[0]["id"] is None
    assert (running[0]["stage"], running[0]["number"], running[0]["worker"], running[0]["lease_token"]) == (
        claim.stage,
        1,
        "worker:1:1",
        claim.lease_token,
    )
    # the owner dies: the rescue writes the one row, from the lease
    assert eng.rescue(claim.item_id, claim.lease_token, 0, "crashed", "test", started + 5)
    rows = ws.store.read("SELECT * FROM attempts")
    assert len(rows) == 1
    row = rows[0]
    assert (row["stage"], row["number"], row["worker"], row["lease_token"], row["outcome"]) == (
        claim.stage,
        1,
        "worker:1:1",
        claim.lease_token,
        "crashed",
    )
    assert row["started_at"] == pytest.approx(started) and row["duration"] == pytest.approx(5)
    assert not row["spent"]
    # a second try at closing the same lease (a late verb, a zombie) writes nothing: the token moved on
    with ws.store.write() as unit:
        assert not unit.close_attempt(claim.item_id, claim.lease_token, time.time(), "cancelled")
    assert len(ws.store.read("SELECT * FROM attempts")) == 1
    assert [a["outcome"] for a in queries.attempts(ws.store, claim.item_id)] == ["crashed"]


def test_recutting_a_running_clip_records_its_attempt_and_fences_it_out(make_demo):
    from types import SimpleNamespace

    from engine.stages import ClipSpec

    ws = make_demo(count=1)
    episode = ws.store.read_one("SELECT id FROM items")["id"]
    clip_id = f"{episode}__c01"
    now = time.time()
    eng = Engine(ws, workers=0)
    cut = SimpleNamespace(
        item=SimpleNamespace(id=episode, source="", show=""), clips=[ClipSpec("c01", 10.0, 40.0, "first cut")]
    )
    with ws.store.write() as conn:
        conn.upsert_clips(eng._clip_batch(cut), now)
        conn.execute("UPDATE items SET status='done' WHERE id=?", (episode,))  # only the clip is claimable
    claim = ws.store.claim("worker:1:1", now, 30)
    assert claim.item_id == clip_id
    recut = SimpleNamespace(item=cut.item, clips=[ClipSpec("c01", 12.0, 45.0, "second cut")])
    with ws.store.write() as conn:  # an editorial rerun moves the clip while its worker runs
        conn.upsert_clips(eng._clip_batch(recut), now + 1)
    rows = ws.store.read("SELECT * FROM attempts WHERE item_id=?", (clip_id,))
    assert [(r["outcome"], r["lease_token"], r["spent"]) for r in rows] == [
        ("cancelled", claim.lease_token, 0)
    ]
    assert "re-cut" in rows[0]["decision"]
    clip = item(ws, clip_id)
    assert clip["status"] == "queued" and clip["lease_token"] > claim.lease_token
    assert clip["lease_owner"] is None and clip["lease_expires_at"] is None
    assert (clip["clip_start"], clip["clip_end"]) == (12.0, 45.0)


def test_an_attempt_opened_by_an_older_ewg_is_closed_in_place(make_demo):
    ws = make_demo(count=1)
    claim = ws.store.claim("old:1:1", time.time(), 30)
    with ws.store.write() as conn:  # what a claim wrote before attempt rows were written at the end
        conn.execute(
            "INSERT INTO attempts (item_id, stage, number, worker, lease_token, started_at, spent)"
            " VALUES (?,?,?,?,?,?,1)",
            (claim.item_id, claim.stage, 1, "old:1:1", claim.lease_token, claim.started_at),
        )
    assert [a["outcome"] for a in queries.attempts(ws.store, claim.item_id)] == [None]  # not shown twice
    assert Engine(ws, workers=0).rescue(claim.item_id, claim.lease_token, 0, "crashed", "test", time.time())
    rows = ws.store.read("SELECT outcome FROM attempts")
    assert [r["outcome"] for r in rows] == ["crashed"]


def test_stage_ignoring_cancel_is_abandoned_and_its_slot_freed(make_demo):
    extra = python_stage("episode", "discovered", "hang_ignoring_cancel", {"timeout": 0.5}, seconds=20)
    ws = make_demo(
        count=2, extra=extra, stall_after="100", stop_grace="0.5", force_grace="0.3", max_attempts="1"
    )
    eng = Engine(ws, workers=1).start()
    # with one worker, the second item can only start once the first one's slot is released
    wait_for(
        lambda: ws.store.read_one("SELECT COUNT(*) FROM attempts WHERE outcome='abandoned'")[0] >= 1,
        timeout=20,
    )
    wait_for(
        lambda: ws.store.read_one("SELECT COUNT(*) FROM items WHERE lease_token > 0")[0] == 2, timeout=20
    )
    eng.stop(force=True)
    abandoned = ws.store.read_one("SELECT * FROM attempts WHERE outcome='abandoned'")
    assert "ignored its cancel token" in (abandoned["error_detail"] or "")
    row = item(ws, abandoned["item_id"])
    assert row["lease_token"] > abandoned["lease_token"]  # fenced out
    assert row["status"] == "failed"  # max_attempts = 1


def test_force_stop_kills_a_hung_command_stage_process_group(make_demo, tmp_path):
    pidfile = tmp_path / "pids.txt"
    script = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pidfile)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "print('progress: 0.5 working', flush=True)\n"
        "time.sleep(600)\n"
    )
    (tmp_path / "hang.py").write_text(script)
    extra = (
        f'\n[stages.episode.discovered]\nkind = "command"\n'
        f"command = [{json.dumps(os.sys.executable)}, {json.dumps(str(tmp_path / 'hang.py'))}]\n"
    )
    ws = make_demo(count=1, extra=extra, stall_after="100")
    item_id = ws.store.read("SELECT id FROM items")[0]["id"]
    eng = Engine(ws, workers=1).start()
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
    parent, child = map(int, pidfile.read_text().split())
    wait_for(lambda: item(ws, item_id)["progress"] == 0.5)  # progress parsed from its output
    Operator(ws, actor="tester").stop([item_id], force=True)
    wait_for(lambda: item(ws, item_id)["status"] == "stopped", timeout=10)
    for pid in (parent, child):
        wait_for(
            lambda pid=pid: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        )
    eng.stop()
    assert queries.attempts(ws.store, item_id)[-1]["outcome"] in ("cancelled", "abandoned")


def test_command_exit_codes_map_to_classes(make_demo, tmp_path):
    extra = (
        f'\n[stages.episode.discovered]\nkind = "command"\n'
        f'command = [{json.dumps(os.sys.executable)}, "-c", "import sys; sys.stderr.write(\'bad input\\\\n\'); sys.exit(65)"]\n'
    )
    ws = make_demo(count=1, extra=extra)
    item_id = ws.store.read("SELECT id FROM items")[0]["id"]
    eng = Engine(ws, workers=1).start()
    wait_for(lambda: item(ws, item_id)["status"] == "failed")
    eng.stop()
    row = item(ws, item_id)
    assert row["error_class"] == "persistent" and "code 65" in row["error_message"]
    assert "bad input" in row["error_detail"]


def test_dead_owner_on_this_host_is_rescued_at_start(make_demo):
    ws = make_demo(count=1)
    proc = psutil.Popen([os.sys.executable, "-c", "pass"])
    proc.wait()
    dead_owner = f"{os.uname().nodename}:{proc.pid}:{int(time.time()) - 1000}"
    claim = ws.store.claim(dead_owner, time.time(), 3600)
    eng = Engine(ws, workers=0)
    result = eng.recover()
    assert result["rescued"] == 1
    row = item(ws, claim.item_id)
    assert row["status"] == "queued" and row["lease_token"] == claim.lease_token + 1 and row["attempts"] == 0
    assert queries.attempts(ws.store, claim.item_id)[0]["outcome"] == "crashed"


def test_stale_heartbeat_is_dead_and_rescued_by_the_watchdog(make_demo):
    ws = make_demo(count=1, dead_after="1.0")
    claim = ws.store.claim("otherhost:1:1", time.time(), 3600)
    with ws.store.write() as conn:
        conn.execute("UPDATE items SET heartbeat_at=? WHERE id=?", (time.time() - 5, claim.item_id))
    eng = Engine(ws, workers=0)
    verdicts = eng.watchdog.check()
    assert verdicts == {claim.item_id: "DEAD"}
    assert item(ws, claim.item_id)["status"] == "queued"


def test_graceful_stop_releases_work_where_it_was(make_demo):
    ws = make_demo(count=2, speed=2.0)
    eng = Engine(ws, workers=2).start()
    wait_for(lambda: eng.busy() == 2)
    eng.stop()
    rows = ws.store.read("SELECT status, lease_owner, attempts FROM items")
    assert {r["status"] for r in rows} == {"queued"} and all(r["lease_owner"] is None for r in rows)
    assert {a["outcome"] for a in ws.store.read("SELECT outcome FROM attempts")} == {"cancelled"}
    assert all(r["attempts"] == 0 for r in rows)


def test_leftover_temp_dirs_are_swept_at_start(make_demo):
    ws = make_demo(count=1)
    item_id = ws.store.read("SELECT id FROM items")[0]["id"]
    junk = checkpoints.temp_dir(ws.item_dir(item_id), "transcribed", 7)
    (junk / "partial.bin").write_bytes(b"x" * 100)
    assert Engine(ws, workers=0).recover()["swept"] == 1
    assert not junk.exists()


def test_low_disk_pauses_claiming_until_space_returns(make_demo):
    ws = make_demo(count=1)
    free = {"mb": 10.0}
    eng = Engine(ws, workers=1, disk_free_mb=lambda path: free["mb"]).start()
    time.sleep(0.6)
    assert eng.health.resource_pause and "critical floor" in eng.health.resource_pause
    assert ws.store.read_one("SELECT COUNT(*) FROM attempts")[0] == 0
    assert "critical floor" in queries.overview(ws.store, time.time()).resource_pause
    free["mb"] = 100_000.0
    assert eng.run_until_idle(timeout=30)
    eng.stop()
    assert queries.counts(ws.store)["episode"]["by_status"]["done"] == 1


def test_disk_full_blocks_without_spending_an_attempt(make_demo):
    faults = '\n[[demo.faults]]\nitem = 1\nstage = "transcribed"\nfault = "disk_full"\n'
    ws = make_demo(count=1, extra=faults)
    eng = Engine(ws, workers=1).start()
    assert eng.run_until_idle(timeout=30)
    eng.stop()
    attempts = ws.store.read(
        "SELECT stage, outcome, error_class, spent FROM attempts WHERE stage='transcribed'"
    )
    assert [(a["outcome"], a["error_class"], a["spent"]) for a in attempts] == [
        ("failed", "resource", 0),
        ("succeeded", None, 1),
    ]
    assert ws.store.read("SELECT verb FROM events WHERE verb='resource_pause'")


def test_service_down_blocks_its_stages_without_spending_attempts(make_demo):
    server = HealthService(up=False)
    url = server.url
    extra = (
        f'\n[services.llm]\nurl = "{url}"\ninterval = 0.2\ntimeout = 1.0\n'
        '\n[stages.episode.enriched]\nkind = "demo"\nduration = 0.05\nservices = ["llm"]\n'
    )
    ws = make_demo(count=2, extra=extra)
    try:
        eng = Engine(ws, workers=2).start()
        wait_for(
            lambda: ws.store.read_one("SELECT COUNT(*) FROM items WHERE status='blocked'")[0] == 2, timeout=20
        )
        time.sleep(0.5)
        assert ws.store.read_one("SELECT COUNT(*) FROM attempts WHERE stage='enriched'")[0] == 0
        row = ws.store.read_one("SELECT blocked_reason FROM items WHERE status='blocked'")
        assert "llm" in row["blocked_reason"]
        import subprocess
        import sys

        out = subprocess.run(
            [sys.executable, "-m", "ewg_tui.cli", "-w", str(ws.root), "status"],
            capture_output=True,
            text=True,
        ).stdout
        assert "service llm is DOWN" in out and "service llm is down" in out  # the header and the item rows
        server.up = True  # blocked items wait for a person or the service, so wait for the service
        wait_for(lambda: queries.counts(ws.store)["episode"]["by_status"]["done"] == 2, timeout=30)
        eng.stop()
        assert ws.store.read_one("SELECT COUNT(*) FROM attempts WHERE stage='enriched' AND spent=1")[0] == 2
    finally:
        server.shutdown()


def test_pause_stops_claiming_across_processes(make_demo):
    ws = make_demo(count=2)
    Operator(ws, actor="tester").pause(reason="maintenance")
    eng = Engine(ws, workers=2).start()
    time.sleep(0.5)
    assert ws.store.read_one("SELECT COUNT(*) FROM attempts")[0] == 0
    Operator(ws, actor="tester").unpause()
    assert eng.run_until_idle(timeout=60)
    eng.stop()


def test_editorial_rerun_updates_clips_instead_of_duplicating(make_demo):
    ws = make_demo(count=1)
    eng = Engine(ws, workers=2).start()
    assert eng.run_until_idle(timeout=60)
    episode = ws.store.read_one("SELECT id FROM items WHERE kind='episode'")["id"]
    Operator(ws, actor="tester").reprocess([episode], from_stage="editorial")
    eng.wake()
    assert eng.run_until_idle(timeout=60)
    eng.stop()
    assert ws.store.read_one("SELECT COUNT(*) FROM items WHERE kind='clip'")[0] == 2


def test_events_reach_the_listener(make_demo):
    ws = make_demo(count=1)
    seen = []
    eng = Engine(ws, workers=1, on_event=seen.append).start()
    assert eng.run_until_idle(timeout=60)
    eng.stop()
    kinds = {e.kind for e in seen}
    assert {"claimed", "succeeded", "state"} <= kinds


def test_add_episode_rejects_unsafe_ids(make_demo):
    ws = make_demo(count=0)
    for bad in ("../escape", "a/b", "", "x" * 300, "$(rm -rf)"):
        with pytest.raises(ValueError):
            add_episode(ws, bad, source="s")


def test_stage_registry_resolves_kinds():
    from engine.config import StageConfig

    assert stages.resolve("episode", "discovered", StageConfig(kind="noop")) is stages.noop
    with pytest.raises(Exception, match="cannot be loaded"):
        stages.resolve("episode", "discovered", StageConfig(kind="python", callable="nope.module:fn"))


def test_slow_is_a_warning_against_the_stage_median(make_demo):
    ws = make_demo(count=2)
    first, second = [r["id"] for r in ws.store.read("SELECT id FROM items ORDER BY id")]
    now = time.time()
    with ws.store.write() as conn:
        for n in range(6):  # history: this stage usually takes one second
            conn.execute(
                "INSERT INTO attempts (item_id, stage, number, worker, lease_token, started_at, ended_at,"
                " outcome, duration, spent) VALUES (?,?,?,?,?,?,?,?,?,1)",
                (first, "discovered", n + 1, "w", 0, now - 100, now - 99, "succeeded", 1.0),
            )
    claim = ws.store.claim("otherhost:1:1", now, 3600)
    assert claim.item_id == second or claim.item_id == first
    with ws.store.write() as conn:  # ten seconds in and only 10% done: projected 100 s
        conn.execute(
            "UPDATE items SET started_at=?, progress=0.1, progress_at=?, heartbeat_at=? WHERE id=?",
            (now - 10, now, now, claim.item_id),
        )
    eng = Engine(ws, workers=0)
    assert eng.watchdog.check(now) == {claim.item_id: "SLOW"}
    row = item(ws, claim.item_id)
    assert row["verdict"] == "SLOW" and row["cancel_requested"] is None and row["status"] == "running"
