"""The command line's conventions (issue 12): did-you-mean, global options in either position, errors and
a version in every --json document, numbered failure groups, completion scripts, help everywhere, and
`ewg log --follow`."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from engine import pipeline
from engine.db import queries
from engine.verbs import Operator
from ewg_tui import cli
from ewg_tui.cli import main

ROOT = Path(__file__).resolve().parents[2]
ISO_Z = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def run(capsys, *args: str) -> tuple[int, str, str]:
    """main() in-process: (exit code, stdout, stderr), whether it returned or exited (argparse)."""
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def fail(ws, item_id: str, message: str, next_stage: str = "transcribed") -> None:
    with ws.store.write() as conn:
        conn.execute(
            "UPDATE items SET status='failed', stage='discovered', next_stage=?, error_class='persistent',"
            " error_message=?, error_at=?, attempts=3 WHERE id=?",
            (next_stage, message, time.time(), item_id),
        )


@pytest.fixture
def failing(make_demo):
    """Three failed episodes in two failure groups: two with one message, one with another."""
    ws = make_demo(count=4, extra='\n[sources]\nroot = "sources"\nscan_interval = 0.0\n')
    (ws.root / "sources").mkdir()
    ids = [r["id"] for r in ws.store.read("SELECT id FROM items ORDER BY id")]
    fail(ws, ids[0], "decoder said: bad frame")
    fail(ws, ids[1], "decoder said: bad frame")
    fail(ws, ids[2], "no audio stream", next_stage="enriched")
    return ws, ids


# -- did you mean ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, wanted",
    [
        (["stauts"], "'stauts' is not an ewg command; did you mean 'status'?"),
        (["retyr", "x"], "did you mean 'retry'?"),
        (["status", "--jsn"], "`ewg status` has no option '--jsn'; did you mean '--json'?"),
        (["retry", "--grup", "1"], "did you mean '--group'?"),
        (["run", "--log-format", "jsno"], "did you mean 'json'?"),
        (["clip", "retyr", "x"], "'retyr' is not a `ewg clip` verb; did you mean 'retry'?"),
        (["alerts", "tset"], "did you mean 'test'?"),
        (["completion", "bsh"], "did you mean 'bash'?"),
    ],
)
def test_a_mistyped_command_option_or_choice_names_the_closest_and_help(capsys, args, wanted):
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert wanted in err and "`ewg --help`" in err and "Traceback" not in err


def test_nothing_close_suggests_nothing_but_still_points_at_help(capsys):
    code, _out, err = run(capsys, "zzzzqqq")
    assert code == 2 and "did you mean" not in err and "`ewg --help`" in err


# -- global options before or after the sub-command -----------------------------------------------------
def test_global_options_work_before_and_after_the_sub_command(make_demo, capsys, tmp_path):
    ws = make_demo(count=2)
    root = str(ws.root)
    docs = []
    for args in (
        ["-w", root, "--json", "status"],
        ["status", "-w", root, "--json"],
        ["--json", "status", "--workspace", root],
        ["-w", root, "status", "--json", "--readonly"],
        ["--readonly", "-w", str(tmp_path), "status", "-w", root, "--json"],  # after wins, like git -C
    ):
        code, out, err = run(capsys, *args)
        assert code == 0, (args, err)
        docs.append(json.loads(out))
    assert all(d == docs[0] for d in docs) and len(docs[0]["episodes"]) == 2


def test_a_global_option_before_the_sub_command_is_not_reset_by_it(make_demo, capsys, monkeypatch, tmp_path):
    ws = make_demo(count=1)
    monkeypatch.chdir(tmp_path)  # not a workspace: only -w makes status work
    assert run(capsys, "-w", str(ws.root), "status")[0] == 0
    code, _out, err = run(capsys, "-w", str(ws.root), "pause", "--dry-run")
    assert code == 0, err
    for args in (["--readonly", "-w", str(ws.root), "pause"], ["-w", str(ws.root), "pause", "--readonly"]):
        code, _out, err = run(capsys, *args)
        assert code == 2 and "--readonly" in err, args


def test_workers_before_or_after_run(make_demo, capsys):
    ws = make_demo(count=1)
    for args in (
        ["--workers", "1", "run", "--until-idle", "-q"],
        ["run", "--workers", "1", "--until-idle", "-q"],
    ):
        code, out, err = run(capsys, "-w", str(ws.root), *args)
        assert code == 0 and "with 1 worker(s)" in out, (args, err)


# -- JSON: errors and versions -------------------------------------------------------------------------
def _version_ok(doc: dict) -> bool:
    return doc["version"] == {"ewg": version("ewg-tui"), "schema": cli.JSON_SCHEMA}


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--jsn", "--json"],  # a parse error
        ["retry", "--group", "7", "--json"],  # a user mistake found by the command
        ["--json", "stauts"],
        ["--json", "run"],  # no JSON output: said as JSON
    ],
)
def test_errors_under_json_are_one_json_document_on_stdout(failing, capsys, args):
    ws, _ids = failing
    code, out, err = run(capsys, "-w", str(ws.root), *args)
    doc = json.loads(out)
    assert code == 2 and doc["exit"] == 2 and doc["error"] and _version_ok(doc)
    assert err == ""  # nothing else: a script reads one document


def test_a_missing_workspace_under_json_is_a_json_error(tmp_path, capsys):
    code, out, _err = run(capsys, "-w", str(tmp_path / "nowhere"), "status", "--json")
    doc = json.loads(out)
    assert code == 2 and doc["exit"] == 2 and "not an ewg workspace" in doc["error"] and _version_ok(doc)


def test_every_json_document_carries_the_version(failing, capsys):
    ws, ids = failing
    root = str(ws.root)
    commands = [
        ["status"],
        ["failures"],
        ["metrics"],
        ["log"],
        ["log", ids[0]],
        ["prune", "--dry-run", "--days", "1"],
        ["scan"],
        ["doctor"],
        ["retry", "--failed", "--dry-run"],
        ["clip", "retry-failed", "--dry-run"],
    ]
    seen = set()
    for args in commands:
        code, out, err = run(capsys, "-w", root, *args, "--json")
        assert code in (0, 1), (args, err)  # doctor: 1 when something is unhealthy
        assert _version_ok(json.loads(out)), args
        seen.add(args[0])
    verbs = {name for name in cli.JSON_COMMANDS if name not in seen}
    for name in sorted(verbs - {"rollback", "extend"}):  # these need an id of a fitting item
        code, out, err = run(
            capsys, "-w", root, name, "--dry-run", "--json", *(["--all"] if name == "reset" else [])
        )
        if code == 0:
            assert _version_ok(json.loads(out)), name
        else:  # a verb that needs ids says so, as JSON
            assert code == 2 and _version_ok(json.loads(out)), (name, err)


def test_the_commands_with_json_are_the_ones_that_take_it():
    parser = cli.build_parser()
    takes = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if any("--json" in a.option_strings for a in sub._actions):
                    takes.add(name)
    assert takes == cli.JSON_COMMANDS


# -- failure groups by number --------------------------------------------------------------------------
def test_failures_are_numbered_the_same_way_in_text_and_json(failing, capsys):
    ws, ids = failing
    code, out, _ = run(capsys, "-w", str(ws.root), "failures", "--json")
    groups = json.loads(out)["groups"]
    assert code == 0 and [g["number"] for g in groups] == [1, 2]
    assert groups[0]["ids"] == ids[:2] and groups[1]["ids"] == [ids[2]]  # largest first
    code, text, _ = run(capsys, "-w", str(ws.root), "failures")
    numbered = re.findall(r"^(\d+)\. \[(\d+)\] (.+)$", text, flags=re.M)
    assert [(int(n), int(c), fp) for n, c, fp in numbered] == [
        (g["number"], g["count"], g["fingerprint"]) for g in groups
    ]
    assert "ewg retry --group 1" in text and "ewg retry --group 2" in text


@pytest.mark.parametrize("verb", ["retry", "reprocess"])
def test_group_takes_the_number_or_the_fingerprint(failing, capsys, verb):
    ws, ids = failing
    fingerprint = queries.failure_groups(ws.store)[1]["fingerprint"]
    picked = []
    for group in ("2", fingerprint):
        code, out, err = run(capsys, "-w", str(ws.root), verb, "--group", group, "--dry-run", "--json")
        assert code == 0, err
        picked.append(sorted(c["item_id"] for c in json.loads(out)["changes"]))
    assert picked == [[ids[2]], [ids[2]]]


@pytest.mark.parametrize("number", ["0", "3", "99"])
def test_a_group_number_out_of_range_is_exit_2_and_says_how_many(failing, capsys, number):
    ws, _ids = failing
    before = ws.store.read("SELECT id, status FROM items ORDER BY id")
    code, _out, err = run(capsys, "-w", str(ws.root), "retry", "--group", number)
    assert code == 2 and f"no failure group {number}" in err and "groups 1 to 2" in err
    assert ws.store.read("SELECT id, status FROM items ORDER BY id") == before


# -- completion ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shell", cli.SHELLS)
def test_completion_scripts_know_the_commands_options_and_stage_names(capsys, shell):
    code, out, _err = run(capsys, "completion", shell)
    assert code == 0
    for word in ("reprocess", "rollback", "failures", "--workspace", "--from", "retry-failed"):
        assert word in out, (shell, word)
    for stage in pipeline.EPISODE_STAGES + pipeline.CLIP_STAGES:
        assert stage in out, (shell, stage)


def test_the_bash_script_is_valid_bash(tmp_path):
    script = tmp_path / "ewg.bash"
    script.write_text(_completion("bash"))
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _completion(shell: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", "completion", shell], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# -- help everywhere ------------------------------------------------------------------------------------
def _parsers(parser: argparse.ArgumentParser, path: str = "ewg"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"`{path} {name}` has no help text"
                yield from _parsers(sub, f"{path} {name}")


def test_every_sub_command_and_option_has_help():
    count = 0
    for path, parser in _parsers(cli.build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            assert action.help and action.help != argparse.SUPPRESS, f"`{path}` {name} has no help text"
            count += 1
    assert count > 150  # the walk reached every sub-command


def test_where_a_stage_is_asked_for_the_stage_names_are_listed():
    parsers = dict(_parsers(cli.build_parser()))
    for path, dest in (("ewg reprocess", "from_stage"), ("ewg rollback", "to_stage"), ("ewg retry", "where")):
        action = next(a for a in parsers[path]._actions if a.dest == dest)
        for kind in pipeline.KINDS:
            assert f"{kind} stages: {', '.join(pipeline.stages_of(kind))}" in action.help, (path, kind)


# -- ewg log --------------------------------------------------------------------------------------------
def test_log_prints_one_timestamp_format(failing, capsys, make_demo):
    ws = make_demo(count=1, name="ran")
    cli_ws = str(ws.root)
    assert run(capsys, "-w", cli_ws, "run", "--until-idle", "-q")[0] == 0
    Operator(ws, actor="tester").pause(reason="look")
    item = ws.store.read_one("SELECT id FROM items ORDER BY id")["id"]
    for args in (["log"], ["log", item]):
        code, out, _ = run(capsys, "-w", cli_ws, *args)
        stamped = [line for line in out.splitlines() if re.search(r"\d\d:\d\d", line)]
        assert code == 0 and stamped
        for line in stamped:
            assert re.search(ISO_Z, line) and not re.search(r"\d\d:\d\d:\d\d(?!Z)", line), line


def _ewg(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    return subprocess.Popen(
        [sys.executable, "-m", "ewg_tui.cli", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(proc: subprocess.Popen, wanted: str, timeout: float = 30.0) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if wanted in line:
            return lines
    raise AssertionError(f"{wanted!r} never came: {lines}")


def test_log_follow_prints_new_events_until_ctrl_c_and_exits_0(make_demo):
    ws = make_demo(count=1)
    Operator(ws, actor="tester").pause(reason="before")
    proc = _ewg("-w", str(ws.root), "log", "--follow", "--interval", "0.1")
    try:
        _read_until(proc, "following")
        Operator(ws, actor="tester").unpause(reason="while following")
        line = _read_until(proc, "while following")[-1]
        assert re.match(ISO_Z + r"  tester\s+unpause", line), line
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err and err == ""


def test_log_follow_of_an_item_shows_its_attempts_as_json_lines(make_demo):
    ws = make_demo(count=1)
    item = ws.store.read_one("SELECT id FROM items ORDER BY id")["id"]
    proc = _ewg("-w", str(ws.root), "log", item, "--follow", "--json", "--interval", "0.1")
    try:
        time.sleep(1.0)  # following from an empty history
        runner = _ewg("-w", str(ws.root), "run", "--until-idle", "-q")
        assert runner.wait(timeout=120) == 0
        lines = _read_until(proc, '"outcome": "succeeded"')
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    docs = [json.loads(line) for line in lines]
    assert all(_version_ok(d) for d in docs) and all(("attempt" in d) != ("event" in d) for d in docs)
    assert {d["attempt"]["item_id"] for d in docs if "attempt" in d} == {item}
    assert proc.returncode == 0 and "Traceback" not in err
