"""Hostile and bad input, table-driven: bad ewg.toml files, bad command lines, bad source files.

Every case: a clear message (no Python traceback), the documented exit code (2 for a user mistake), and
nothing lost or changed: the database is byte-for-byte the same after a refused command, and nothing is
written outside the workspace. Source files with shell metacharacters in their names reach a command
stage as one argument each, exactly as named, because no shell is ever involved.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))

from conftest import fast_demo_text  # noqa: E402

from engine.demo import seed_episodes  # noqa: E402
from engine.workspace import init_workspace  # noqa: E402


def ewg(*args, cwd=None, timeout=120):
    proc = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return proc.returncode, proc.stdout, proc.stderr


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "ws"
    w = init_workspace(root, fast_demo_text(faults=False))
    seed_episodes(w, 2)
    ids = [r["id"] for r in w.store.read("SELECT id FROM items ORDER BY id")]
    w.close()
    return root, ids


# -- bad ewg.toml ----------------------------------------------------------------------------------
GOOD_STAGE = '[stages.episode.discovered]\nkind = "demo"\n'
CONFIGS = {
    "syntax: unclosed table": ("[engine\nworkers = 2\n", "not valid TOML"),
    "syntax: unterminated string": ('[paths]\nitems = "items\n', "not valid TOML"),
    "syntax: duplicate key": ("[engine]\nworkers = 2\nworkers = 3\n", "not valid TOML"),
    "syntax: bare words": ("this is not toml at all\n", "not valid TOML"),
    "unknown section": ("[enigne]\nworkers = 2\n", "[enigne]: unknown key"),
    "unknown key": ("[engine]\nwrokers = 2\n", "[engine] wrokers: unknown key"),
    "wrong type: string for int": ('[engine]\nworkers = "two"\n', "[engine] workers"),
    "wrong type: list for float": ("[engine]\nheartbeat_interval = [1]\n", "[engine] heartbeat_interval"),
    "wrong type: table for section": ('engine = "fast"\n', "[engine]"),
    "negative lease": ("[engine]\nlease_duration = -5\n", "[engine] lease_duration"),
    "negative timeout": ("[timeouts]\nepisode_processing = -1\n", "[timeouts] episode_processing"),
    "absurd workers": ("[engine]\nworkers = 100000\n", "[engine] workers"),
    "absurd busy timeout": ("[engine]\nbusy_timeout_ms = 1000000000\n", "[engine] busy_timeout_ms"),
    "zero max attempts": ("[retry]\nmax_attempts = 0\n", "[retry] max_attempts"),
    "max delay below base": (
        "[retry]\nbase_delay = 10.0\nmax_delay = 1.0\n",
        "max_delay must be at least base_delay",
    ),
    "dead_after below heartbeat": ("[engine]\nheartbeat_interval = 5.0\ndead_after = 2.0\n", "dead_after"),
    "unknown policy": ('[watchdog]\nstall_policy = "sometimes"\n', "[watchdog] stall_policy"),
    "unknown synchronous": ('[engine]\nsynchronous = "MAYBE"\n', "[engine] synchronous"),
    "disk floor above warning": (
        "[health]\ndisk_warn_free_mb = 10.0\ndisk_critical_free_mb = 20.0\n",
        "disk_critical_free_mb must not exceed",
    ),
    "unknown error class in recovery": (
        '[recovery]\nmanual_intervention_required = ["bad_luck"]\n',
        "unknown error class 'bad_luck'",
    ),
    "unknown stage name": (
        '[stages.episode.transcode]\nkind = "demo"\n',
        "[stages.episode.transcode]: unknown stage",
    ),
    "unknown item kind": (
        '[stages.podcast.discovered]\nkind = "demo"\n',
        "[stages.podcast]: unknown item kind",
    ),
    "unknown stage kind": (
        '[stages.episode.discovered]\nkind = "magic"\n',
        "[stages.episode.discovered] kind",
    ),
    "command stage without command": ('[stages.episode.discovered]\nkind = "command"\n', "needs command = ["),
    "command program not on PATH": (
        '[stages.episode.discovered]\nkind = "command"\ncommand = ["no-such-whisper-xyz", "{source}"]\n',
        "'no-such-whisper-xyz' was not found",
    ),
    "python stage without callable": ('[stages.episode.discovered]\nkind = "python"\n', "needs callable"),
    "exit code to unknown class": (
        '[stages.episode.discovered]\nkind = "command"\ncommand = ["true"]\n'
        'exit_codes = { "3" = "gremlins" }\n',
        "unknown class 'gremlins'",
    ),
    "exit code not a number": (
        '[stages.episode.discovered]\nkind = "command"\ncommand = ["true"]\n'
        'exit_codes = { "three" = "transient" }\n',
        "is not an exit code number",
    ),
    "bad error rule regex": (
        '[stages.episode.discovered]\nkind = "demo"\n'
        'error_rules = [{ pattern = "([", class = "transient" }]\n',
        "not a valid regular expression",
    ),
    "service with a non-http url": ('[services.llm]\nurl = "ftp://example.org"\n', "[services.llm] url"),
    "stage needs an undeclared service": (
        '[stages.episode.enriched]\nkind = "demo"\nservices = ["llm"]\n',
        "'llm' is not declared",
    ),
    "demo fault on a missing stage": (
        '[[demo.faults]]\nitem = 1\nstage = "nowhere"\nfault = "transient"\n',
        "'nowhere' is not a episode stage",
    ),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_bad_config_is_refused_with_a_clear_message(ws, case):
    root, _ids = ws
    text, expected = CONFIGS[case]
    cfg = root / "ewg.toml"
    good = cfg.read_text()
    db_before = sha(root / "ewg.db")
    cfg.write_text(text)
    try:
        for args in (["status"], ["run", "--until-idle", "--quiet"]):
            code, out, err = ewg("--workspace", str(root), *args)
            assert code == 2, (case, args, code, err)
            assert "Traceback" not in err and err.startswith("ewg: "), err
            assert expected in err, err
            assert "ewg.toml" in err
    finally:
        cfg.write_text(good)
    assert sha(root / "ewg.db") == db_before


def test_unreadable_config_bytes_are_refused(ws):
    root, _ids = ws
    cfg = root / "ewg.toml"
    good = cfg.read_bytes()
    cfg.write_bytes(b"[engine]\nworkers = \xff\xfe\n")
    try:
        code, _out, err = ewg("--workspace", str(root), "status")
    finally:
        cfg.write_bytes(good)
    assert code == 2 and "cannot be read" in err and "Traceback" not in err


# -- bad command lines --------------------------------------------------------------------------------
def _args(ids):
    first = ids[0]
    return {
        "retry an unknown id": (["retry", "no_such_ep999"], 2, "Unknown item id"),
        "retry an id with shell syntax": (["retry", "$(touch PWNED)"], 2, "Unknown item id"),
        "retry a path-like id": (["retry", "../../etc/passwd"], 2, "Unknown item id"),
        "retry nothing": (["retry"], 2, "needs ID"),
        "reprocess from a stage that does not exist": (
            ["reprocess", first, "--from", "transcode"],
            2,
            "'transcode' is not a stage",
        ),
        "reprocess an unknown id": (["reprocess", "nobody"], 2, "Unknown item id"),
        "rollback forward": (["rollback", first, "--to", "rendered"], 2, "move forward"),
        "rollback to a stage that does not exist": (  # a mistake in the call (issue 11), not exit 0
            ["rollback", first, "--to", "transcode"],
            2,
            "has no stage",
        ),
        "rollback without --to": (["rollback", first], 2, "--to"),
        "skip an unknown id": (["skip", "ghost"], 2, "Unknown item id"),
        "reset without ids": (["reset"], 2, "--all"),
        "extend by a negative number": (["extend", first, "-5"], 2, "ewg:"),
        "extend by words": (["extend", first, "ten"], 2, "is not a number of seconds"),
        "extend by an absurd number": (["extend", first, "1e12"], 2, "must be between"),
        "negative workers": (["--workers", "-1", "status"], 2, "must not be negative"),
        "workers not a number": (["--workers", "many", "status"], 2, "is not a whole number"),
        "log limit not a number": (["log", "--limit", "x"], 2, "is not a whole number"),
        "log of an unknown id": (["log", "nobody"], 2, "Unknown item id"),
        "unknown command": (["frobnicate"], 2, "is not an ewg command"),
        "unknown option": (["status", "--colour"], 2, "has no option '--colour'"),
        "clip verb on an episode": (["clip", "retry", first], 2, "is not a clip"),
        "retry a failure group that does not exist": (
            ["retry", "--group", "x|y|z"],
            2,
            "is not a failure group fingerprint",
        ),
        "retry a failure group with no items left": (  # a selection that matches nothing (issue 11)
            ["retry", "--group", "transcribed|transient|gone"],
            0,
            "Nothing to do",
        ),
    }


CLI_CASES = sorted(_args(["x"]))


@pytest.mark.parametrize("case", CLI_CASES)
def test_bad_command_line_is_refused_with_a_clear_message(ws, case, tmp_path):
    root, ids = ws
    args, code_expected, expected = _args(ids)[case]
    db_before = sha(root / "ewg.db")
    code, out, err = ewg("--workspace", str(root), *args, cwd=tmp_path)
    assert code == code_expected, (case, code, out, err)
    assert "Traceback" not in err
    assert expected in (err if code else out), (out, err)
    if code:
        assert sha(root / "ewg.db") == db_before  # a refused command changes nothing
    assert not any(tmp_path.iterdir()) and not (root / "PWNED").exists()


def test_not_a_workspace(tmp_path):
    code, _out, err = ewg("--workspace", str(tmp_path / "nowhere"), "status")
    assert code == 2 and "is not an ewg workspace" in err and "ewg init" in err and "Traceback" not in err
    assert not (tmp_path / "nowhere").exists()  # nothing created


# -- bad source files -----------------------------------------------------------------------------------
ECHO = (
    "import json, os, sys\n"
    "out = sys.argv[2]\n"
    "open(os.path.join(out, 'argv.json'), 'w').write(json.dumps(sys.argv[1:]))\n"
    "print('progress: 1.0 recorded')\n"
)

HOSTILE_NAMES = {
    "semicolon": "ep11; touch PWNED; echo.mp4",
    "command substitution": "ep12 $(touch PWNED).mp4",
    "backticks": "ep13 `touch PWNED`.mp4",
    "dot-dot and quotes": "ep14 ..'..\"..%2F..mp4",
    "unicode and spaces": "Épisode 15 — ünïcødé 日本語  two  spaces.mp4",
    "leading dash": "-ep16 --output=PWNED.mp4",
    "newline": "ep17 line\nbreak.mp4",
    "glob characters": "ep18 *?[a].mp4",
}


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """A workspace whose [sources] folder holds every hostile name, scanned and run with a command stage."""
    base = tmp_path_factory.mktemp("hostile")
    root = base / "ws"
    show = root / "sources" / "Hostile Show"
    show.mkdir(parents=True)
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"not yours")
    for name in HOSTILE_NAMES.values():
        (show / name).write_bytes(os.urandom(64))
    deep = show / ("d" * 250) / ("e" * 250) / ("f" * 250)
    deep.mkdir(parents=True)
    long_file = deep / (("g" * 240) + " ep19.mp4")
    long_file.write_bytes(b"")
    (show / "ep20 escape.mp4").symlink_to(outside / "secret.mp4")
    (show / "ep21 dangling.mp4").symlink_to(base / "does-not-exist.mp4")
    (base / "echo.py").write_text(ECHO)
    extra = (
        f'\n[sources]\nroot = "sources"\nstable_seconds = 0.0\nscan_interval = 0.0\n'
        f'\n[stages.episode.discovered]\nkind = "command"\n'
        f'command = [{json.dumps(sys.executable)}, {json.dumps(str(base / "echo.py"))}, "{{source}}", "{{output_dir}}"]\n'
    )
    w = init_workspace(root, fast_demo_text(faults=False, speed=0.01, extra=extra))
    w.close()
    before = sorted(str(p) for p in base.rglob("*") if not str(p).startswith(str(root)))
    scan = ewg("--workspace", str(root), "scan", "--json", cwd=base)
    run = ewg("--workspace", str(root), "run", "--until-idle", "--quiet", cwd=base, timeout=300)
    status = ewg("--workspace", str(root), "status", "--json", cwd=base)
    after = sorted(str(p) for p in base.rglob("*") if not str(p).startswith(str(root)))
    return {
        "root": root,
        "show": show,
        "base": base,
        "outside": outside,
        "scan": scan,
        "run": run,
        "status": status,
        "before": before,
        "after": after,
        "long_file": long_file,
    }


def test_scan_and_run_of_hostile_names_succeed_without_tracebacks(scanned):
    for name in ("scan", "run", "status"):
        code, _out, err = scanned[name]
        assert code == 0, (name, err)
        assert "Traceback" not in err


@pytest.mark.parametrize("case", sorted(HOSTILE_NAMES))
def test_hostile_name_reaches_the_command_as_one_exact_argument(scanned, case):
    name = HOSTILE_NAMES[case]
    doc = json.loads(scanned["status"][1])
    root = scanned["root"]
    found = None
    for item_dir in (root / "items").iterdir():
        argv_file = item_dir / "discovered" / "argv.json"
        if argv_file.exists():
            argv = json.loads(argv_file.read_text())
            if argv[0] == str(scanned["show"] / name):
                found = (item_dir.name, argv)
    assert found, f"{name!r} never reached the command stage"
    item_id, argv = found
    assert len(argv) == 2 and argv[1].startswith(str(root / "items" / item_id))
    episode = next(e for e in doc["episodes"] if e["id"] == item_id)
    assert episode["status"] == "done", episode


def test_nothing_is_written_outside_the_workspace(scanned):
    assert scanned["after"] == scanned["before"]
    assert (scanned["outside"] / "secret.mp4").read_bytes() == b"not yours"
    assert not list(scanned["base"].rglob("PWNED*")) and not list(Path.cwd().glob("PWNED*"))
    assert not list(Path("/tmp").glob("PWNED*"))


def test_a_very_long_path_and_symlinks_are_handled(scanned):
    doc = json.loads(scanned["status"][1])
    ids = {e["id"] for e in doc["episodes"]}
    assert len(str(scanned["long_file"])) > 1000
    assert any("ep019" in i for i in ids)  # a 1000+ character path is an ordinary episode
    assert all(len(i) <= 200 for i in ids)  # and ids stay short and safe
    assert not any("ep021" in i for i in ids)  # a dangling link is not a file: ignored
    conn = sqlite3.connect(f"file:{scanned['root'] / 'ewg.db'}?mode=ro", uri=True)
    escaped = conn.execute("SELECT source FROM items WHERE kind='episode' AND id LIKE '%ep020%'").fetchall()
    conn.close()
    # a link out of the source folder is taken as the operator's choice (the scanner follows links), read only:
    # its target is never written (test_nothing_is_written_outside_the_workspace checks the bytes)
    assert len(escaped) == 1 and escaped[0][0].endswith("ep20 escape.mp4")


def test_zero_byte_and_random_byte_videos_fail_persistent_with_a_clear_message(tmp_path):
    """The built-in probe stage (PyAV) on files that are not videos: failed, persistent, names the file."""
    root = tmp_path / "ws"
    show = root / "sources" / "Bad Files"
    show.mkdir(parents=True)
    (show / "empty ep1.mp4").write_bytes(b"")
    (show / "noise ep2.mp4").write_bytes(os.urandom(200_000))
    text = fast_demo_text(faults=False).split("\n# The demo pipeline")[0]
    w = init_workspace(
        root, text + '\n[sources]\nroot = "sources"\nstable_seconds = 0.0\nscan_interval = 0.0\n'
    )
    w.close()
    assert ewg("--workspace", str(root), "scan")[0] == 0
    code, out, err = ewg("--workspace", str(root), "run", "--until-idle", "--quiet", timeout=300)
    assert code == 0 and "Traceback" not in err
    doc = json.loads(ewg("--workspace", str(root), "status", "--json")[1])
    assert len(doc["episodes"]) == 2
    for e in doc["episodes"]:
        assert e["status"] == "failed" and e["error_class"] == "persistent", e
        assert e["error_message"] and ("empty" in e["error_message"] or "noise" in e["error_message"]), e
