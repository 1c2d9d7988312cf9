"""A damaged, truncated, empty, missing or too-new database: a clear message and exit code 3 from every
command, never a silently recreated database, the file left exactly as it was, and `ewg doctor` explains
the way back from the newest backup (exit 1) without crashing."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine.db import SCHEMA_VERSION
from engine.doctor import CRITICAL, diagnose
from engine.runtime import Engine

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


def _garbage(db: Path) -> None:
    data = bytearray(db.read_bytes())
    data[:16] = b"this is not sql!"
    db.write_bytes(bytes(data))


def _truncate(db: Path) -> None:
    size = db.stat().st_size
    with open(db, "r+b") as fh:
        fh.truncate(max(4096 * 2, size // 3))


def _zero(db: Path) -> None:
    db.write_bytes(b"")


def _newer(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()


def _scribble(db: Path) -> None:
    """Random bytes over the middle pages: the header is fine, the b-trees are not."""
    size = db.stat().st_size
    with open(db, "r+b") as fh:
        for page in range(2, size // 4096):
            fh.seek(page * 4096 + 100)
            fh.write(os.urandom(600))


DAMAGE = {
    "garbage header": (_garbage, "not an SQLite database"),
    "truncated": (_truncate, ""),
    "zero bytes": (_zero, ""),
    "newer schema": (_newer, "newer than this ewg knows"),
    "scribbled pages": (_scribble, ""),
}


@pytest.fixture
def ws_with_backup(make_demo):
    ws = make_demo(count=3)
    eng = Engine(ws, workers=2).start()
    assert eng.run_until_idle(timeout=60)
    eng.stop()
    backup = ws.store.backup(ws.backups, label="known-good")
    db = ws.store.path
    ws.close()
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    return ws.root, db, backup


CASES = sorted(DAMAGE)


@pytest.mark.parametrize("case", CASES)
def test_damaged_database_is_refused_and_doctor_shows_the_way_back(ws_with_backup, case):
    root, db, backup = ws_with_backup
    damage, expected = DAMAGE[case]
    damage(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for args in (["status"], ["run", "--until-idle", "--quiet"], ["retry", "--failed"], ["log"]):
        code, out, err = ewg("--workspace", str(root), *args)
        assert code == 3, (case, args, code, out, err)
        assert "Traceback" not in err and err.startswith("ewg: "), err
        assert expected in err
        assert "backup" in err or "Upgrade ewg" in err
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # never rewritten, never recreated
    report = diagnose(root)
    assert not report.healthy
    critical = [f for f in report.findings if f.severity == CRITICAL]
    assert critical and critical[0].check in ("database", "schema", "integrity")
    assert str(backup) in critical[0].fix or case == "newer schema" and "Upgrade ewg" in critical[0].fix
    code, out, err = ewg("--workspace", str(root), "doctor")
    assert code == 1 and "Traceback" not in err and "CRIT" in out
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    code, out, err = ewg("--workspace", str(root), "doctor", "--repair")
    assert code == 1 and "Traceback" not in err
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # --repair does not touch it either


def test_missing_database_is_not_recreated(ws_with_backup):
    root, db, backup = ws_with_backup
    db.unlink()
    code, out, err = ewg("--workspace", str(root), "status")
    assert code == 3 and "missing" in err and "never recreated" in err and "Traceback" not in err
    assert not db.exists()
    report = diagnose(root)
    assert [f.check for f in report.findings if f.severity == CRITICAL] == ["database"]
    assert f"cp -p {backup} {db}" in report.findings[1].fix
    assert not db.exists()


def test_the_way_back_works(ws_with_backup):
    """Following doctor's steps literally gives a workspace that opens, with every item of the backup."""
    root, db, backup = ws_with_backup
    _garbage(db)
    report = diagnose(root)
    steps = [f for f in report.findings if f.severity == CRITICAL][0].fix
    assert f"cp -p {backup} {db}" in steps
    os.replace(db, f"{db}.damaged")
    subprocess.run(["cp", "-p", str(backup), str(db)], check=True)
    code, out, err = ewg("--workspace", str(root), "status", "--json")
    assert code == 0, err
    assert diagnose(root).healthy


def test_a_backup_cut_short_is_flagged(ws_with_backup):
    root, db, backup = ws_with_backup
    half = backup.with_name("ewg-20990101T000000Z-scheduled.db")
    half.write_bytes(backup.read_bytes()[:4096])
    report = diagnose(root)
    broken = [f for f in report.findings if f.check == "backups" and f.severity == "warning"]
    assert broken and half.name in broken[0].what
    assert (
        str(backup) in [f for f in report.findings if f.check == "backups"][0].what
    )  # the good one is offered


def _one_index_page(db: Path) -> None:
    """The root page of one index nothing reads at start-up (the audit log's) overwritten."""
    conn = sqlite3.connect(db)
    (page,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='ix_events_verb'").fetchone()
    (size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with open(db, "r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(b"\xff" * 64)


def _console_in_a_terminal(root: Path, *args: str, timeout: float = 30.0) -> tuple[int, str]:
    """`ewg` (the console) in a pseudo-terminal until it ends: its exit code and what it printed."""
    import pty
    import re
    import select
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ewg_tui.cli", "--workspace", str(root), *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TERM": "xterm-256color",
            "COLUMNS": "100",
            "LINES": "30",
        },
        start_new_session=True,
    )
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the terminal's other end is closed: the console ended
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = re.sub(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[()][A-Z0-9]|\x1b[=>]", "", out.decode(errors="replace"))
    return code, text


@pytest.mark.slow
@pytest.mark.parametrize("mode", [(), ("--attach",)])
def test_the_console_refuses_a_damaged_database_after_its_first_frame_too(ws_with_backup, mode):
    """The console checks the database's pages after its first frame (90 ms at 100k items, not spent
    before it): damaged pages still end it with the message every command gives, exit 3, no engine
    run and the file as it was."""
    root, db, _backup = ws_with_backup
    _one_index_page(db)  # opens and reads fine: only the page check finds it
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    code, text = _console_in_a_terminal(root, *mode)
    assert code == 3, text[-2000:]
    assert "Episodes" in text  # the first frame came first
    assert "Traceback" not in text and "is damaged (PRAGMA quick_check" in text and "backup" in text, text[
        -2000:
    ]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_a_store_opened_before_its_page_check_writes_nothing_until_it_passes(ws_with_backup):
    """The console opens the database without the page check and runs it after its first frame; a
    verb pressed meanwhile must not write to a damaged file: the first write runs the check itself."""
    from engine.db import DatabaseError, SQLiteStore

    _root, db, _backup = ws_with_backup
    _one_index_page(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    store = SQLiteStore.open(db, verify=False)
    try:
        assert store.read_one("SELECT COUNT(*) FROM items")[0] > 0  # reads work meanwhile
        with pytest.raises(DatabaseError, match=r"is damaged \(PRAGMA quick_check"):
            with store.write() as unit:
                unit.execute("UPDATE items SET title='written anyway'")
    finally:
        store.close()
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
