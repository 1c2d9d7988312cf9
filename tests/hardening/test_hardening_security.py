"""Security on a shared box: owner-only database files, verbs record the OS user, --readonly changes nothing,
and a workspace belonging to (or in use by) another user is refused. (The console's read-only mode, keys and
command palette included, is covered by tests/tui/test_console_view.py::test_readonly_shows_everything_and_runs_nothing.)"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from engine.runtime import Engine
from engine.verbs import Operator

ROOT = Path(__file__).resolve().parents[2]


def ewg(*args, timeout=120):
    proc = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return proc.returncode, proc.stdout, proc.stderr


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_wal_and_backups_are_owner_only(make_demo):
    old = os.umask(0o022)  # a permissive umask must not matter
    try:
        ws = make_demo(count=1)
        eng = Engine(ws, workers=1).start()
        assert eng.run_until_idle(timeout=60)
        backup = ws.store.backup(ws.backups)
        db = ws.store.path
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), backup]
        for f in files:
            assert f.exists(), f
            assert mode(f) & 0o077 == 0, f"{f} is {oct(mode(f))}"
        eng.stop()
    finally:
        os.umask(old)


def test_operator_verbs_record_the_os_user(make_demo):
    ws = make_demo(count=1)
    item_id = ws.store.read_one("SELECT id FROM items")["id"]
    root = ws.root
    ws.close()
    code, _out, err = ewg("--workspace", str(root), "stop", item_id, "--reason", "security test")
    assert code == 0, err
    code, out, _err = ewg("--workspace", str(root), "log", "--json")
    events = json.loads(out)["events"]
    stop = [e for e in events if e["verb"] == "stop"]
    assert stop and stop[0]["actor"] == getpass.getuser() and stop[0]["reason"] == "security test"
    assert Operator.__init__.__defaults__ == (
        None,
    )  # callers cannot forget the actor: it defaults to the OS user


WRITE_COMMANDS = [
    ["run", "--until-idle"],
    ["scan"],
    ["retry", "--failed"],
    ["reprocess", "{id}"],
    ["resume", "{id}"],
    ["reset", "--all"],
    ["skip", "{id}"],
    ["rollback", "{id}", "--to", "discovered"],
    ["clear-cache", "{id}"],
    ["deep-clean"],
    ["stop"],
    ["extend", "{id}", "10"],
    ["pause"],
    ["unpause"],
    ["clip", "retry-failed"],
    ["doctor", "--repair"],
]


@pytest.mark.parametrize("args", WRITE_COMMANDS, ids=lambda a: " ".join(a))
def test_readonly_refuses_every_command_that_writes(make_demo, args):
    ws = make_demo(count=1)
    item_id = ws.store.read_one("SELECT id FROM items")["id"]
    root, db = ws.root, ws.store.path
    ws.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    code, _out, err = ewg("--workspace", str(root), "--readonly", *[a.replace("{id}", item_id) for a in args])
    assert code == 2 and "--readonly" in err and "Traceback" not in err
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_readonly_still_reads(make_demo):
    ws = make_demo(count=1)
    root = ws.root
    ws.close()
    for args in (["status"], ["failures"], ["metrics"], ["log"], ["doctor"]):
        code, _out, err = ewg("--workspace", str(root), "--readonly", *args)
        assert code == 0, (args, err)


def test_readonly_reads_an_older_schema_without_migrating_it(make_demo):
    from engine.db import SCHEMA_VERSION

    ws = make_demo(count=2)
    ws.store.connection().execute(f"PRAGMA user_version={SCHEMA_VERSION - 1}")
    root, db = ws.root, ws.store.path
    ws.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    code, out, err = ewg("--workspace", str(root), "--readonly", "status", "--json")
    assert code == 0, err
    assert len(json.loads(out)["episodes"]) == 2
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # no migration, no write
    assert not list((root / "backups").glob("*pre-migration*"))
    code, _out, err = ewg("--workspace", str(root), "status")  # a read-write open migrates
    assert code == 0, err
    assert list((root / "backups").glob(f"*pre-migration-v{SCHEMA_VERSION - 1}*"))


def test_a_workspace_owned_by_another_user_is_refused(make_demo):
    ws = make_demo(count=1)
    root, db = ws.root, ws.store.path
    ws.close()
    os.chown(db, 4242, 4242)  # tests run as root: chown stands in for another account's workspace
    code, _out, err = ewg("--workspace", str(root), "run", "--until-idle", "--quiet")
    assert code != 0 and "uid 4242" in err and "Traceback" not in err


def test_a_workspace_in_use_by_another_users_engine_is_refused(make_demo):
    ws = make_demo(count=1)
    other = subprocess.Popen(["sleep", "60"], user=65534)  # a live process of the user nobody
    try:
        started = int(psutil.Process(other.pid).create_time())
        with ws.store.write() as conn:
            conn.execute(
                "INSERT INTO engines (owner, host, pid, started_at, heartbeat_at, workers, busy, state,"
                " executions) VALUES (?,?,?,0,0,1,0,'running',0)",
                (f"{socket.gethostname()}:{other.pid}:{started}", socket.gethostname(), other.pid),
            )
        root = ws.root
        ws.close()
        code, _out, err = ewg("--workspace", str(root), "run", "--until-idle", "--quiet")
        assert code != 0 and "nobody" in err and "Traceback" not in err
    finally:
        other.kill()
        other.wait()
