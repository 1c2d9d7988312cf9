"""The database and its neighbours (ARCHITECTURE.md contracts 1 and 7): bad inputs next to the database,
and commits lost with a WAL.

Each case goes through the real command line (`python -m ewg_tui.cli`) and asserts the exit code (2 for
a mistake the user can fix, 3 for a damaged database, 1 for a doctor that found problems), a message
that names the problem, no Python traceback, and nothing changed: the database byte for byte, no backup
taken, the odd file left as it was. The lost-WAL test copies a workspace without its `-wal` while a
reader pins the database file at an earlier snapshot, exactly what a `cp ewg.db` of a running
workspace does, and checks that `ewg doctor` notices, that `--repair` re-adopts what verifies and that
the engine says so at start-up.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))

from ewgtest import fast_demo_text  # noqa: E402

from engine.demo import seed_episodes  # noqa: E402
from engine.workspace import init_workspace, open_workspace  # noqa: E402

# Root ignores file modes; without these two capabilities it is held to them like any owner.
UNPRIVILEGED = (
    ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]
    if os.geteuid() == 0
    else []
)


def ewg(*args, prefix=(), timeout=60):
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "ewg_tui.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return proc.returncode, proc.stdout, proc.stderr


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def no_traceback(out: str, err: str) -> None:
    assert "Traceback" not in out + err, out + err


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """A fresh workspace (2 queued episodes) and one run to the end (2 episodes, 4 clips done)."""
    base = tmp_path_factory.mktemp("inputs")
    fresh = base / "fresh"
    w = init_workspace(fresh, fast_demo_text(faults=False))
    seed_episodes(w, 2)
    w.close()
    done = base / "done"
    shutil.copytree(fresh, done)
    code, out, err = ewg("-w", str(done), "run", "--until-idle", "-q", timeout=120)
    assert code == 0, out + err
    return fresh, done


@pytest.fixture
def workspace(templates, tmp_path):
    """make(which="fresh"|"done") -> a private copy of a template workspace."""

    def make(which: str = "fresh") -> Path:
        source = templates[0] if which == "fresh" else templates[1]
        root = tmp_path / which
        shutil.copytree(source, root)
        return root

    return make


def _set_user_version(root: Path, version: int) -> None:
    conn = sqlite3.connect(root / "ewg.db")
    conn.execute(f"PRAGMA user_version={version}")
    conn.close()


def _replace_db(kind: str):
    def apply(root: Path) -> None:
        db = root / "ewg.db"
        db.unlink()
        if kind == "directory":
            db.mkdir()
        else:
            os.mkfifo(db)

    return apply


def _nested_toml(root: Path) -> None:
    with open(root / "ewg.toml", "a", encoding="utf-8") as fh:
        fh.write("\n[demo.faults_nested]\nx = " + "[" * 600 + "]" * 600 + "\n")


def _fifo_toml(root: Path) -> None:
    (root / "ewg.toml").unlink()
    os.mkfifo(root / "ewg.toml")


# -- bad things next to the database: (prepare, command, exit code, words the message must hold) ---------
CASES = {
    "TOML nested 600 levels": (_nested_toml, ["status"], 2, ["nested too deeply"]),
    "TOML nested 600 levels, doctor": (_nested_toml, ["doctor"], 1, ["nested too deeply"]),
    "ewg.toml is a FIFO": (_fifo_toml, ["status"], 2, ["not a regular file", "FIFO"]),
    "user_version < 0": (
        lambda r: _set_user_version(r, -3),
        ["status"],
        3,
        ["schema version -3", "negative"],
    ),
    "user_version < 0, doctor": (
        lambda r: _set_user_version(r, -3),
        ["doctor"],
        1,
        ["schema version -3", "negative"],
    ),
    "database is a directory": (
        _replace_db("directory"),
        ["status"],
        2,
        ["is a directory", "[paths] database"],
    ),
    "database is a directory, doctor": (_replace_db("directory"), ["doctor"], 1, ["is a directory"]),
    "database is a FIFO": (_replace_db("fifo"), ["status"], 2, ["named pipe (FIFO)", "[paths] database"]),
    "database is a FIFO, doctor": (_replace_db("fifo"), ["doctor"], 1, ["named pipe (FIFO)"]),
    "log --limit 10**23": (None, ["log", "--limit", str(10**23)], 2, ["--limit", "between 1 and 1000000"]),
    "log --limit 2**63": (None, ["log", "--limit", str(2**63)], 2, ["--limit", "between 1 and 1000000"]),
    "log --limit 0": (None, ["log", "--limit", "0"], 2, ["--limit", "between 1 and 1000000"]),
}


def _state(root: Path) -> tuple:
    """What must not change: the database's bytes (or its odd file type), ewg.toml, the backups."""
    db = root / "ewg.db"
    mode = os.stat(db).st_mode
    content = sha(db) if stat.S_ISREG(mode) else stat.S_IFMT(mode)
    backups = sorted(p.name for p in (root / "backups").glob("*")) if (root / "backups").exists() else []
    toml = root / "ewg.toml"
    config = sha(toml) if stat.S_ISREG(os.stat(toml).st_mode) else "special"
    return content, config, backups


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_a_bad_input_is_a_clear_message_and_changes_nothing(workspace, case):
    prepare, command, code, words = CASES[case]
    root = workspace()
    if prepare is not None:
        prepare(root)
    before = _state(root)
    got, out, err = ewg("-w", str(root), *command, timeout=30)  # a FIFO hung here for ever
    no_traceback(out, err)
    assert got == code, out + err
    for word in words:
        assert word in out + err, (word, out + err)
    assert "`ewg doctor` checks it" not in out + err  # never "run doctor" from doctor itself
    assert _state(root) == before


def _claim(root: Path) -> str:
    """One item running under a lease (as an engine would hold it), through the engine's API."""
    ws = open_workspace(root)
    try:
        claim = ws.store.claim("otherhost:1:1", time.time(), 3600.0)
        assert claim is not None
        return claim.item_id
    finally:
        ws.close()


@pytest.mark.parametrize("seconds", ["nan", "NaN", "+nan"])
def test_extend_by_nan_is_refused_before_it_reaches_the_database(workspace, seconds):
    root = workspace()
    item_id = _claim(root)
    before = _state(root)
    code, out, err = ewg("-w", str(root), "extend", item_id, seconds)
    no_traceback(out, err)
    assert code == 2, out + err
    assert "finite" in err and seconds in err, err
    assert "backup" not in err
    assert _state(root) == before


# -- config values that make no sense --------------------------------------------------------------
CONFIGS = {
    "lease_duration equal to heartbeat_interval": (
        {"lease_duration": "0.2"},
        "",
        ["[engine] lease_duration", "must be above heartbeat_interval"],
    ),
    "lease_duration below heartbeat_interval": (
        {"lease_duration": "0.1"},
        "",
        ["[engine] lease_duration", "must be above heartbeat_interval"],
    ),
    "stall_after below dead_after": (
        {"stall_after": "1.0"},
        "",
        ["[watchdog] stall_after", "must be above [engine] dead_after"],
    ),
    "stall_after equal to dead_after": (
        {"stall_after": "1.5"},
        "",
        ["[watchdog] stall_after", "must be above [engine] dead_after"],
    ),
    "a stage's stall_after below dead_after": (
        {},
        '\n[stages.episode.discovered]\nkind = "noop"\nstall_after = 0.5\n',
        ["[stages.episode.discovered] stall_after", "must be above [engine] dead_after"],
    ),
    "stall_after infinite": ({"stall_after": "inf"}, "", ["[watchdog] stall_after", "not a finite number"]),
    "backup_interval infinite": (
        {"backup_interval": "inf"},
        "",
        ["[engine] backup_interval", "not a finite number"],
    ),
    "disk floor minus infinity": (
        {"disk_critical_free_mb": "-inf"},
        "",
        ["[health] disk_critical_free_mb", "not a finite number"],
    ),
    "dead_after NaN": ({"dead_after": "nan"}, "", ["[engine] dead_after", "not a finite number"]),
    "workers = true": ({"workers": "true"}, "", ["[engine] workers", "boolean where a number is meant"]),
    "heartbeat_interval = true": (
        {"heartbeat_interval": "true"},
        "",
        ["[engine] heartbeat_interval", "boolean where a number is meant"],
    ),
    "max_attempts = false": (
        {"max_attempts": "false"},
        "",
        ["[retry] max_attempts", "boolean where a number is meant"],
    ),
    "a stage's timeout = true": (
        {},
        '\n[stages.episode.discovered]\nkind = "noop"\ntimeout = true\n',
        ["[stages.episode.discovered] timeout", "boolean where a number is meant"],
    ),
}


@pytest.mark.parametrize("case", list(CONFIGS), ids=list(CONFIGS))
def test_config_values_that_make_no_sense_are_refused_at_load(workspace, case):
    overrides, extra, words = CONFIGS[case]
    root = workspace()
    (root / "ewg.toml").write_text(fast_demo_text(faults=False, extra=extra, **overrides), encoding="utf-8")
    before = _state(root)
    code, out, err = ewg("-w", str(root), "status")
    no_traceback(out, err)
    assert code == 2, out + err
    for word in words:
        assert word in err, (word, err)
    assert "nothing was changed" in err
    assert _state(root) == before


# -- a read-only database is a permission, not damage -------------------------------------------------
def _unprivileged_or_skip() -> list[str]:
    if UNPRIVILEGED and shutil.which("setpriv") is None:
        pytest.skip("root ignores file modes and setpriv is not here to drop that")
    return UNPRIVILEGED


@pytest.mark.parametrize(
    "what, command, code, fix",
    [
        ("file", ["pause"], 2, "chmod u+rw"),
        ("folder", ["status"], 2, "chmod u+rwx"),
        ("file", ["doctor"], 1, "chmod u+rw"),
        ("folder", ["doctor"], 1, "chmod u+rwx"),
    ],
    ids=["file, pause", "folder, status", "file, doctor", "folder, doctor"],
)
def test_a_read_only_database_is_named_as_a_permission_problem(workspace, what, command, code, fix):
    prefix = _unprivileged_or_skip()
    root = workspace()
    before = _state(root)
    target = root / "ewg.db" if what == "file" else root
    os.chmod(target, 0o400 if what == "file" else 0o500)
    try:
        got, out, err = ewg("-w", str(root), *command, prefix=prefix)
    finally:
        os.chmod(target, 0o600 if what == "file" else 0o700)
    no_traceback(out, err)
    assert got == code, out + err
    assert "permission problem" in out + err and str(target) in out + err and fix in out + err, out + err
    assert "Restore the newest backup" not in out + err and "cp -p" not in out + err
    assert _state(root) == before


# -- manifests that are not UTF-8 ------------------------------------------------------------------
def test_doctor_reports_a_recorded_manifest_that_is_not_utf8_as_corrupt(workspace):
    root = workspace("done")
    conn = sqlite3.connect(root / "ewg.db")
    [(item_id,)] = conn.execute(
        "SELECT item_id FROM checkpoints WHERE stage='transcribed' ORDER BY item_id LIMIT 1"
    ).fetchall()
    conn.execute(
        "UPDATE checkpoints SET manifest=CAST(x'7b2266696c6573223a5bff5d7d' AS TEXT)"
        " WHERE item_id=? AND stage='transcribed'",
        (item_id,),
    )
    conn.commit()
    conn.close()
    before = _state(root)
    code, out, err = ewg("-w", str(root), "doctor")
    no_traceback(out, err)
    assert code == 1, out + err
    assert (
        f"{item_id}: damaged checkpoint(s): transcribed: its manifest record is corrupt: not valid UTF-8"
        in out
    )
    assert "`ewg doctor` checks it" not in out + err
    assert _state(root) == before


def test_doctor_reports_a_checkpoint_folder_whose_manifest_is_not_utf8(workspace):
    root = workspace()
    ws = open_workspace(root)
    item_id = ws.store.read_one("SELECT id FROM items ORDER BY id")["id"]
    ws.close()
    folder = root / "items" / item_id / "discovered"  # output of a stage the database does not record
    folder.mkdir(parents=True)
    (folder / "discovered.json").write_text("{}", encoding="utf-8")
    (folder / "manifest.json").write_bytes(b'{"files": [{"path": "discovered.json\xff"}]}')
    before = _state(root)
    code, out, err = ewg("-w", str(root), "doctor")
    no_traceback(out, err)
    assert code == 1, out + err
    assert f"{item_id}: the discovered checkpoint folder has a corrupt manifest" in out
    assert "not valid UTF-8" in out and "Healthy" not in out
    assert _state(root) == before


# -- a lost WAL ----------------------------------------------------------------------------------
def _copy_without_wal(root: Path, copy: Path) -> None:
    """Run the workspace to the end while a reader pins the database file at the queued state, then copy
    it without its -wal: the copy's database has lost every commit of the run, its items/ has them all."""
    holder = sqlite3.connect(root / "ewg.db", isolation_level=None)
    try:
        holder.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        holder.execute("BEGIN")
        holder.execute("SELECT COUNT(*) FROM items").fetchall()  # a read snapshot: no checkpoint passes it
        code, out, err = ewg("-w", str(root), "run", "--until-idle", "-q", timeout=120)
        assert code == 0, out + err
        assert (root / "ewg.db-wal").stat().st_size > 0
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns("ewg.db-wal", "ewg.db-shm"))
    finally:
        holder.close()


def test_a_lost_wal_is_noticed_and_repair_re_adopts_what_verifies(workspace, tmp_path):
    root = workspace()
    copy = tmp_path / "copied"
    _copy_without_wal(root, copy)
    ids = [r[0] for r in sqlite3.connect(copy / "ewg.db").execute("SELECT id FROM items ORDER BY id")]
    assert len(ids) == 2  # the clips were made by commits the copy lost

    before = _state(copy)
    code, out, err = ewg("-w", str(copy), "doctor")
    no_traceback(out, err)
    assert code == 1 and "Healthy" not in out, out + err
    for item_id in ids:
        assert (
            f"{item_id}: completed output of discovered, transcribed, enriched, editorial, rendered is on "
            "disk and verifies" in out
        ), out
    assert "`ewg doctor --repair` re-adopts discovered, transcribed, enriched" in out
    assert _state(copy) == before  # doctor without --repair changes nothing

    code, out, err = ewg("-w", str(copy), "doctor", "--repair")
    no_traceback(out, err)
    assert code == 0, out + err
    assert out.count("repaired: re-adopted discovered, transcribed, enriched") == 2, out
    ws = open_workspace(copy)
    try:
        rows = ws.store.read("SELECT id, stage, status FROM items ORDER BY id")
        assert [(r["stage"], r["status"]) for r in rows] == [("enriched", "queued")] * 2
        events = ws.store.read("SELECT affected, result FROM events WHERE verb='doctor_repair'")
        assert len(events) == 2 and all("re-adopted" in e["result"] for e in events)
    finally:
        ws.close()

    # A second copy, started without repair: the engine says so at start-up and reruns the stages.
    again = tmp_path / "again"
    shutil.copytree(root, again)
    conn = sqlite3.connect(again / "ewg.db")
    conn.execute("DELETE FROM checkpoints")
    conn.execute("DELETE FROM items WHERE kind='clip'")
    conn.execute("UPDATE items SET stage=NULL, next_stage='discovered', status='queued'")
    conn.commit()
    conn.close()
    code, out, err = ewg("-w", str(again), "run", "--until-idle", "-q", timeout=120)
    assert code == 0, out + err
    assert "2 item(s) have completed output on disk that the database does not record" in err, err
    assert "ewg doctor --repair" in err

    # The repaired copy finishes without running the adopted stages again, and is healthy.
    code, out, err = ewg("-w", str(copy), "run", "--until-idle", "-q", timeout=120)
    assert code == 0, out + err
    reran = sqlite3.connect(copy / "ewg.db").execute(
        "SELECT a.stage FROM attempts a JOIN items i ON i.id = a.item_id WHERE i.kind='episode'"
    )
    assert sorted({r[0] for r in reran}) == ["editorial", "rendered"]
    code, out, err = ewg("-w", str(copy), "doctor")
    assert code == 0 and "Healthy" in out, out + err
    # A rollback on purpose leaves later folders on disk with stale records: not a lost commit.
    code, out, err = ewg("-w", str(copy), "rollback", ids[0], "--to", "transcribed")
    assert code == 0, out + err
    code, out, err = ewg("-w", str(copy), "doctor")
    assert code == 0 and "commits: every checkpoint folder on disk is recorded" in out, out + err
