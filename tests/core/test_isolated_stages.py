"""Heavy stages run in a worker subprocess: progress, logs, clips, errors, cancel and a dying worker."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from engine.config import StageConfig
from engine.db import queries
from engine.runtime import Engine
from engine.stages.isolated import wants_isolation
from engine.verbs import Operator


def wait_for(predicate, timeout=30.0, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


def isolated_stage(kind, stage, fn, **options):
    opts = "".join(f"\n{k} = {json.dumps(v)}" for k, v in options.items())
    return (
        f'\n[stages.{kind}.{stage}]\nkind = "python"\ncallable = "stagelib:{fn}"\nisolate = true\n'
        # these stages wait without progress on purpose: the watchdog must not judge them STALLED
        + "stall_after = 600\n"
        + (f"\n[stages.{kind}.{stage}.options]{opts}" if opts else "")
        + "\n"
    )


def first_id(ws):
    return ws.store.read("SELECT id FROM items WHERE kind='episode' ORDER BY id")[0]["id"]


def test_heavy_builtin_stages_are_isolated_and_others_are_not():
    builtin = StageConfig()
    assert wants_isolation("clip", "generated", builtin)
    assert wants_isolation("clip", "rendered", builtin)
    assert wants_isolation("episode", "transcribed", builtin)
    assert not wants_isolation("episode", "enriched", builtin)
    assert not wants_isolation("clip", "generated", StageConfig(isolate=False))
    assert not wants_isolation("episode", "enriched", StageConfig(kind="demo"))


def test_an_isolated_stage_runs_in_a_lower_priority_child_and_publishes_its_output(make_demo):
    ws = make_demo(count=1, extra=isolated_stage("episode", "transcribed", "where_am_i"), worker_nice="7")
    item_id = first_id(ws)
    eng = Engine(ws, workers=1).start()
    try:
        assert eng.run_until_idle(timeout=90)
    finally:
        eng.stop()
    info = json.loads((ws.item_dir(item_id) / "transcribed" / "where.json").read_text())
    assert info["pid"] != os.getpid()
    assert info["nice"] >= os.getpriority(os.PRIO_PROCESS, 0) + 7
    assert info["sid"] == info["pid"]  # a session of its own: a force stop reaches all it starts
    if info["autogroup"] is not None:  # a kernel with autogroups: the session's group yields too
        assert info["autogroup"].endswith(f"nice {info['nice']}"), info["autogroup"]
    assert info["inputs"] == ["discovered"]  # the earlier checkpoints reach the child
    attempt = [a for a in queries.attempts(ws.store, item_id) if a["stage"] == "transcribed"][-1]
    assert attempt["outcome"] == "succeeded"
    assert f"working in {info['pid']}" in attempt["log_tail"]  # the child's log line reached the tail
    assert queries.item(ws.store, item_id)["status"] == "done"


def test_clips_declared_in_the_worker_are_created(make_demo):
    ws = make_demo(count=1, extra=isolated_stage("episode", "editorial", "clips_in_worker"))
    item_id = first_id(ws)
    eng = Engine(ws, workers=1).start()
    try:
        assert eng.run_until_idle(timeout=90)
    finally:
        eng.stop()
    clips = ws.store.read(
        "SELECT id, clip_start, clip_end FROM items WHERE parent_id=? ORDER BY id", (item_id,)
    )
    assert [(c["id"], c["clip_start"], c["clip_end"]) for c in clips] == [
        (f"{item_id}__c1", 1.0, 2.5),
        (f"{item_id}__c2", 3.0, 4.0),
    ]


@pytest.mark.parametrize(
    ("error", "error_class", "text"),
    [
        ("stage", "persistent", "the source is unreadable"),
        ("enospc", "resource", "No space left"),
        ("value", "persistent", "bad value in the data"),
    ],
)
def test_a_failure_in_the_worker_keeps_its_class_and_message(make_demo, error, error_class, text):
    ws = make_demo(
        count=1,
        extra=isolated_stage("episode", "discovered", "fail_with", error=error),
        max_attempts="1",
        disk_critical_free_mb="0",
    )
    item_id = first_id(ws)
    eng = Engine(ws, workers=1).start()
    try:
        wait_for(lambda: queries.item(ws.store, item_id)["error_class"] == error_class)
    finally:
        eng.stop()
    row = queries.item(ws.store, item_id)
    assert text in row["error_message"]
    attempt = queries.attempts(ws.store, item_id)[-1]
    if error != "stage":  # an unexpected exception: its traceback, from the child, is in the log tail
        assert "Traceback" in attempt["log_tail"] and "fail_with" in attempt["log_tail"]
    else:  # an expected StageError says its message, no traceback
        assert "Traceback" not in (attempt["log_tail"] or "")


def test_a_worker_that_dies_is_an_attempt_outcome_and_the_engine_goes_on(make_demo):
    ws = make_demo(count=2, extra=isolated_stage("episode", "discovered", "die_hard"), max_attempts="1")
    eng = Engine(ws, workers=2).start()
    try:
        wait_for(
            lambda: (
                {r["status"] for r in ws.store.read("SELECT status FROM items WHERE kind='episode'")}
                == {"failed"}
            )
        )
        assert eng.running_stages() == []  # no slot is held by a dead worker
    finally:
        eng.stop()
    for row in ws.store.read("SELECT error_class, error_message FROM items WHERE kind='episode'"):
        assert row["error_class"] == "transient"
        assert "killed by SIGKILL" in row["error_message"]


def worker_pids():
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True) if "child_main" in " ".join(p.cmdline())}


def test_stop_reaches_the_worker_at_its_next_safe_point(make_demo):
    ws = make_demo(count=1, extra=isolated_stage("episode", "discovered", "where_am_i", seconds=120))
    item_id = first_id(ws)
    eng = Engine(ws, workers=1).start()
    try:
        wait_for(lambda: queries.item(ws.store, item_id)["progress"] == 0.5)  # progress relayed
        wait_for(worker_pids, timeout=5)
        started = time.time()
        Operator(ws, actor="tester").stop([item_id])
        wait_for(lambda: queries.item(ws.store, item_id)["status"] == "stopped", timeout=15)
        assert time.time() - started < 10
        wait_for(lambda: not worker_pids(), timeout=5)
    finally:
        eng.stop()
    assert queries.attempts(ws.store, item_id)[-1]["outcome"] == "cancelled"


def test_force_stop_kills_a_worker_that_ignores_the_cancel(make_demo):
    ws = make_demo(
        count=1,
        extra=isolated_stage("episode", "discovered", "hang_ignoring_cancel", seconds=120),
        force_grace="0.5",
    )
    item_id = first_id(ws)
    eng = Engine(ws, workers=1).start()
    try:
        wait_for(lambda: queries.item(ws.store, item_id)["progress"] == 0.1)
        pids = wait_for(worker_pids, timeout=5)
        Operator(ws, actor="tester").stop([item_id], force=True)
        wait_for(lambda: queries.item(ws.store, item_id)["status"] == "stopped", timeout=15)
        wait_for(lambda: not (pids & worker_pids()), timeout=5)
    finally:
        eng.stop()


@pytest.mark.parametrize(("isolate", "fn"), [(True, "fail_with"), (False, "fail_with")])
def test_an_expected_stage_error_is_shown_by_its_message_not_a_traceback(make_demo, isolate, fn):
    extra = isolated_stage("episode", "discovered", fn, error="stage")
    if not isolate:
        extra = extra.replace("isolate = true", "isolate = false")
    ws = make_demo(count=1, extra=extra, max_attempts="1")
    item_id = first_id(ws)
    eng = Engine(ws, workers=1).start()
    try:
        wait_for(lambda: queries.item(ws.store, item_id)["status"] == "failed")
    finally:
        eng.stop()
    attempt = queries.attempts(ws.store, item_id)[-1]
    shown = attempt["log_tail"] or attempt["error_detail"]  # what the console's detail pane shows
    assert "the source is unreadable" in shown and "Traceback" not in shown


def test_a_command_stage_runs_at_worker_nice_and_so_does_its_session(make_demo, tmp_path, monkeypatch):
    """An operator's own encoder (a `command` stage) yields the cores like the built-in ones: its
    program runs at `[engine] worker_nice`, in a session whose scheduling group has that nice too."""
    report = tmp_path / "where.json"
    script = (
        "import json, os, sys\n"
        "from stagelib import own_autogroup\n"
        "group = own_autogroup()\n"
        "info = {'pid': os.getpid(), 'sid': os.getsid(0), 'nice': os.getpriority(os.PRIO_PROCESS, 0), "
        "'autogroup': group}\n"
        f"open({str(report)!r}, 'w').write(json.dumps(info))\n"
        "open(os.path.join(os.environ.get('EWG_OUTPUT_DIR', '.'), 'done.txt'), 'w').write('ok')\n"
    )
    (tmp_path / "where.py").write_text(script)
    extra = (
        f'\n[stages.episode.discovered]\nkind = "command"\n'
        f"command = [{json.dumps(os.sys.executable)}, {json.dumps(str(tmp_path / 'where.py'))}]\n"
    )
    ws = make_demo(count=1, extra=extra, worker_nice="6")
    tests = str(Path(__file__).resolve().parents[1])  # the program imports stagelib from there
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH", "")) if p)
    )
    eng = Engine(ws, workers=1).start()
    try:
        deadline = time.monotonic() + 60
        while not report.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        eng.stop()
    info = json.loads(report.read_text())
    assert info["nice"] >= os.getpriority(os.PRIO_PROCESS, 0) + 6
    assert info["sid"] == info["pid"]
    if info["autogroup"] is not None:  # a kernel with autogroups: the session's group yields too
        assert info["autogroup"].endswith(f"nice {info['nice']}"), info["autogroup"]
