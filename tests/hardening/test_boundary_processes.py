"""The boundary, stage subprocesses and commands (issue 9): nothing a stage starts outlives its attempt,
a terminal that goes away ends the process that used it, output is bounded, placeholders are plain.

Each test fails on the main branch before this change; see RELIABILITY.md, Stage subprocesses.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from engine import checkpoints
from engine.runtime import Engine
from ewg_tui.cli import main

ROOT = Path(__file__).resolve().parents[2]
PY = json.dumps(sys.executable)


def wait_for(predicate, timeout=30.0, step=0.05, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def cli(*args, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    return subprocess.Popen(
        [sys.executable, "-m", "ewg_tui.cli", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def command_stage(kind: str, stage: str, argv: list[str], extra: str = "") -> str:
    return f'\n[stages.{kind}.{stage}]\nkind = "command"\ncommand = {json.dumps(argv)}\n{extra}'


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def edit(ws, old: str, new: str) -> None:
    """Change ewg.toml after the workspace was made (init refuses a bad configuration, as it should)."""
    path = ws.root / "ewg.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def status_of(ws, item_id: str) -> dict:
    return dict(ws.store.read_one("SELECT * FROM items WHERE id=?", (item_id,)))


def first_item(ws) -> str:
    return ws.store.read("SELECT id FROM items ORDER BY id")[0]["id"]


# -- placeholders and commands ------------------------------------------------------------------------
BAD_PLACEHOLDERS = [
    ("{source.__class__}", "attribute"),
    ("{title[0]}", "index"),
    ("{title!r}", "conversions"),
    ("{attempt:>5}", "format specs"),
    ("--name={title", "unbalanced braces"),
    ("}{source}", "unbalanced braces"),
    ("{}", "has no name"),
    ("{0}", "has no name"),
    ("{bogus}", "{bogus} is not a placeholder"),
    ("{dir_rendered}", "{dir_rendered} is not a placeholder"),  # a later stage: never an input here
]


@pytest.mark.parametrize("part,why", BAD_PLACEHOLDERS, ids=[p for p, _ in BAD_PLACEHOLDERS])
def test_a_bad_placeholder_is_a_config_error_at_load(make_demo, capsys, part, why):
    ws = make_demo(count=1, extra=command_stage("episode", "transcribed", ["echo", "ARG"]))
    edit(ws, '"ARG"', json.dumps(part))
    code = main(["-w", str(ws.root), "status"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "[stages.episode.transcribed] command" in err and why in err, err
    assert "Traceback" not in err


def test_a_placeholder_in_options_command_is_checked_too(make_demo, capsys):
    extra = '\n[stages.episode.transcribed]\nkind = "builtin"\n[stages.episode.transcribed.options]\n'
    ws = make_demo(count=1, extra=extra + 'command = ["whisper", "ARG"]\n')
    edit(ws, '"ARG"', '"{source.__init__.__globals__}"')
    assert main(["-w", str(ws.root), "status"]) == 2
    err = capsys.readouterr().err
    assert "[stages.episode.transcribed] options.command" in err and "{source.__init__.__globals__}" in err


def test_a_placeholder_inside_sh_c_is_warned_about_and_the_safe_forms_are_not(make_demo, capsys, tmp_path):
    out = tmp_path / "got.txt"
    risky = ["sh", "-c", f"echo {{title}} > {out}"]
    ws = make_demo(count=0, extra=command_stage("episode", "transcribed", risky))
    assert main(["-w", str(ws.root), "run", "--until-idle", "-q"]) == 0
    err = capsys.readouterr().err
    assert "warning: [stages.episode.transcribed] command: {title}" in err
    assert "command injection" in err and '"$1"' in err and "$EWG_TITLE" in err
    # the safe forms: a positional argument, and the environment every command stage receives
    title = "$(touch PWNED); `id`"
    safe = ["sh", "-c", f'printf "%s|%s" "$1" "$EWG_TITLE" > {out}', "sh", "{title}"]
    ws2 = make_demo(count=0, name="ws2", extra=command_stage("episode", "discovered", safe))
    from engine.workspace import add_episode

    add_episode(ws2, "safe_ep001_2026-11-29", str(tmp_path / "x.mp4"), show="safe", title=title)
    assert main(["-w", str(ws2.root), "run", "--until-idle", "-q"]) == 0
    assert "warning:" not in capsys.readouterr().err
    assert out.read_text() == f"{title}|{title}"
    assert not list(Path(ws2.root).rglob("PWNED")) and not (ROOT / "PWNED").exists()


def test_declared_outputs_a_command_did_not_write_fail_persistent(make_demo, tmp_path):
    writes = script(tmp_path, "writes.py", "open('probe.json', 'w').write('{}')\n")
    ws = make_demo(
        count=1,
        extra=command_stage(
            "episode", "discovered", [sys.executable, writes], 'outputs = ["segments.json"]\n'
        ),
    )
    item_id = first_item(ws)
    eng = Engine(ws, workers=1).start()
    try:
        wait_for(lambda: status_of(ws, item_id)["status"] == "failed", what="the item to fail")
    finally:
        eng.stop()
    row = status_of(ws, item_id)
    assert row["error_class"] == "persistent"
    assert "did not write segments.json" in row["error_message"]
    assert row["stage"] is None or row["stage"] != "discovered"  # no silent empty checkpoint


@pytest.mark.parametrize("bad", ["../escape.json", "/etc/passwd"])
def test_declared_outputs_outside_the_output_folder_are_refused_at_load(make_demo, capsys, bad):
    ws = make_demo(count=1, extra=command_stage("episode", "transcribed", ["true"], 'outputs = ["ARG"]\n'))
    edit(ws, '"ARG"', json.dumps(bad))
    assert main(["-w", str(ws.root), "status"]) == 2
    err = capsys.readouterr().err
    assert "outputs" in err and "inside output_dir" in err and "Traceback" not in err


# -- stage subprocesses --------------------------------------------------------------------------------
def test_a_background_child_is_dead_before_the_checkpoint_is_published(make_demo, tmp_path):
    """The leader exits 0 at once; its child (same group, deaf to SIGTERM) keeps writing into the
    output folder. The group is ended (SIGTERM, grace, SIGKILL) before the folder is published."""
    pidfile, termed = tmp_path / "child.pid", tmp_path / "child.got-sigterm"
    child = textwrap.dedent(
        f"""
        import os, signal, time
        signal.signal(signal.SIGTERM, lambda *a: open({str(termed)!r}, 'w').close())
        open({str(pidfile)!r}, 'w').write(str(os.getpid()))
        while True:
            with open('late.txt', 'a') as fh:
                fh.write('x')
            time.sleep(0.02)
        """
    )
    leader = script(
        tmp_path,
        "leader.py",
        f"""
        import os, subprocess, sys, time
        subprocess.Popen([sys.executable, '-c', {child!r}], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not os.path.exists({str(pidfile)!r}):
            time.sleep(0.01)
        open('probe.json', 'w').write('{{}}')
        """,
    )
    ws = make_demo(count=1, extra=command_stage("episode", "discovered", [sys.executable, leader]))
    item_id = first_item(ws)
    eng = Engine(ws, workers=1).start()
    try:
        wait_for(
            lambda: ws.store.read_one(
                "SELECT 1 FROM checkpoints WHERE item_id=? AND stage='discovered'", (item_id,)
            ),
            what="the discovered checkpoint",
        )
        child_pid = int(pidfile.read_text())
        assert gone(child_pid), "the stage's background child outlived the attempt"
        assert termed.exists(), "the group got no SIGTERM before the SIGKILL"
        published = ws.item_dir(item_id) / "discovered"
        row = ws.store.read_one(
            "SELECT manifest FROM checkpoints WHERE item_id=? AND stage='discovered'", (item_id,)
        )
        before = (published / "late.txt").read_bytes()
        time.sleep(0.3)
        assert (published / "late.txt").read_bytes() == before  # nothing writes into a published checkpoint
        assert checkpoints.verify(published, json.loads(row["manifest"])) == []
    finally:
        eng.stop()


@pytest.mark.slow
def test_a_killed_engines_orphaned_group_is_killed_before_the_retry_runs(make_demo, tmp_path):
    """kill -9 of `ewg run` during a quiet command stage whose child lives on: the next engine ends the
    recorded group (checked by its lease marker) before the item runs again."""
    flag, orphan_log, retry_log, child_pid_file = (
        tmp_path / "first",
        tmp_path / "orphan.log",
        tmp_path / "retry.log",
        tmp_path / "child.pid",
    )
    child = textwrap.dedent(
        f"""
        import os, time
        open({str(child_pid_file)!r}, 'w').write(str(os.getpid()))
        while True:
            with open({str(orphan_log)!r}, 'a') as fh:
                fh.write(repr(time.time()) + '\\n')
            time.sleep(0.02)
        """
    )
    stage = script(
        tmp_path,
        "quiet.py",
        f"""
        import os, subprocess, sys, time
        if os.path.exists({str(flag)!r}):
            with open({str(retry_log)!r}, 'a') as fh:
                fh.write(repr(time.time()) + '\\n')
            sys.exit(0)
        open({str(flag)!r}, 'w').write(str(os.getpid()))
        subprocess.Popen([sys.executable, '-c', {child!r}], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(600)  # quiet: no output, no progress
        """,
    )
    ws = make_demo(
        count=1,
        extra=command_stage("episode", "discovered", [sys.executable, stage]),
        stall_after="600",
        dead_after="30",
        lease_duration="60",
    )
    item_id = first_item(ws)
    victim = cli("-w", str(ws.root), "--workers", "1", "run")
    orphan = None
    try:
        wait_for(lambda: child_pid_file.exists() and child_pid_file.read_text(), what="the stage's child")
        orphan = int(child_pid_file.read_text())
        time.sleep(0.3)  # the stage is recorded with its lease right after it starts
        victim.kill()
        victim.wait(timeout=10)
        leader = int(flag.read_text())
        wait_for(lambda: gone(leader), timeout=2, what="the stage to die with its engine (PR_SET_PDEATHSIG)")
        time.sleep(0.3)
        assert not gone(orphan), "the child should outlive the engine's kill (only the group kill ends it)"
        second = cli("-w", str(ws.root), "--workers", "1", "run", "--until-idle", "-q")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        assert (
            status_of(ws, item_id)["stage"] != "discovered" or status_of(ws, item_id)["status"] != "running"
        )
        retry_started = float(retry_log.read_text().split()[0])
        last_orphan_write = float(orphan_log.read_text().split()[-1])
        assert gone(orphan), "the orphaned stage process is still running"
        print(f"the orphan's last write came {retry_started - last_orphan_write:.2f} s before its retry")
        assert last_orphan_write < retry_started, (
            f"the orphan wrote {last_orphan_write - retry_started:.2f} s after its retry started"
        )
    finally:
        victim.kill()
        if orphan and not gone(orphan):
            os.kill(orphan, signal.SIGKILL)


def test_sighup_stops_ewg_run_like_sigterm_and_releases_its_work(make_demo):
    ws = make_demo(count=3, speed=0.4)
    p = cli("-w", str(ws.root), "--workers", "3", "run")
    try:
        wait_for(
            lambda: ws.store.read_one("SELECT COUNT(*) FROM items WHERE status='running'")[0], what="work"
        )
        p.send_signal(signal.SIGHUP)
        p.communicate(timeout=30)
    finally:
        p.kill()
    assert p.returncode == 0
    rows = ws.store.read("SELECT status, lease_owner FROM items")
    assert all(r["status"] in ("queued", "done") and r["lease_owner"] is None for r in rows)
    released = ws.store.read("SELECT spent FROM attempts WHERE outcome='cancelled'")
    assert released and all(r["spent"] == 0 for r in released)


@pytest.mark.slow
def test_the_console_exits_when_its_terminal_goes_away(make_demo, tmp_path):
    """The console runs under a stand-in shell that outlives the hang-up and passes no SIGHUP on (as a
    shell killed with its pane, or one that ignores SIGHUP, does): only the dead terminal can tell it."""
    ws = make_demo(count=4, speed=1.0)
    pidfile = tmp_path / "console.pid"
    pid, master = pty.fork()
    if pid == 0:  # the stand-in shell: session leader of the pty, deaf to SIGHUP
        try:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            env = {**os.environ, "TERM": "xterm-256color", "PYTHONPATH": str(ROOT)}
            console = subprocess.Popen(
                [sys.executable, "-m", "ewg_tui.cli", "-w", str(ws.root)],
                cwd=ROOT,
                env=env,
                preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
            )
            pidfile.write_text(str(console.pid))
            console.wait()
            time.sleep(120)
        finally:
            os._exit(0)
    console = None
    try:

        def read_screen():
            if select.select([master], [], [], 0.05)[0]:
                try:
                    os.read(master, 65536)
                except OSError:
                    pass
            return ws.store.read_one("SELECT COUNT(*) FROM items WHERE status='running'")[0]

        wait_for(read_screen, timeout=60, what="the console's engine to run work")
        console = psutil.Process(int(pidfile.read_text()))
        os.close(master)
        master = None
        started = time.time()
        wait_for(
            lambda: not console.is_running() or console.status() == psutil.STATUS_ZOMBIE,
            timeout=20,
            what="the console to exit after its terminal went away",
        )
        took = time.time() - started
        assert took < 10, took
        rows = ws.store.read("SELECT status, lease_owner FROM items")
        assert all(r["status"] != "running" and r["lease_owner"] is None for r in rows), rows
    finally:
        if master is not None:
            os.close(master)
        if console is not None and console.is_running():
            console.kill()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


# -- bounded output ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_50_mb_line_keeps_memory_flat_and_the_database_small(make_demo, tmp_path):
    printer = script(
        tmp_path,
        "flood.py",
        """
        import sys
        chunk = 'x' * (1 << 20)
        for _ in range(50):
            sys.stdout.write(chunk)
        sys.stdout.write('\\nprogress: 0.5 halfway\\n')
        for _ in range(10):
            sys.stderr.write(chunk)
        sys.stderr.write('\\n')
        sys.stdout.flush()
        open('probe.json', 'w').write('{}')
        """,
    )
    ws = make_demo(count=1, extra=command_stage("episode", "discovered", [sys.executable, printer]))
    item_id = first_item(ws)
    me = psutil.Process()
    base = me.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    eng = Engine(ws, workers=1).start()
    try:
        wait_for(
            lambda: ws.store.read_one(
                "SELECT 1 FROM checkpoints WHERE item_id=? AND stage='discovered'", (item_id,)
            ),
            timeout=120,
            what="the stage to finish",
        )
    finally:
        eng.stop()
        done.set()
        sampler.join()
    grew = (peak[0] - base) / 2**20
    print(f"peak RSS growth {grew:.1f} MB")
    assert grew < 100, f"engine memory grew {grew:.0f} MB for a 50 MB line"
    tail = ws.store.read_one(
        "SELECT log_tail FROM attempts WHERE item_id=? AND stage='discovered'", (item_id,)
    )["log_tail"]
    assert len(tail.encode()) <= 40 * 1024, len(tail)
    assert "more characters" in tail or "line cut" in tail
    ws.store.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db_size = sum(p.stat().st_size for p in Path(ws.root).glob("ewg.db*"))
    print(f"log tail {len(tail.encode())} bytes, database {db_size} bytes")
    assert db_size < 5 * 2**20, db_size


def test_a_long_line_is_cut_where_it_is_read():
    from engine.stages.command import LINE_CAP, _Lines

    lines = _Lines()
    got = lines.feed(b"a" * (3 * LINE_CAP)) + lines.feed(b"b\nshort\nrest")
    got += lines.close()
    assert len(got) == 3
    assert got[0].startswith("a" * LINE_CAP) and f"{2 * LINE_CAP + 1} more bytes not kept" in got[0]
    assert got[1:] == ["short", "rest"]
    assert len(lines.buf) == 0


def test_a_recorded_group_that_now_belongs_to_a_stranger_is_left_alone():
    """A rescue kills a recorded group only if a live member carries the attempt's lease marker: the
    PID (and group id) of a long-dead stage may belong to another process by now."""
    from engine.stages import groups

    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    ours = groups.popen(
        ["sleep", "30"], env={**os.environ, groups.LEASE_ENV: "host:1:2/ep/7"}, stdout=subprocess.DEVNULL
    )
    try:
        time.sleep(0.2)  # both have exec'd: their environment is readable
        assert groups.kill_recorded(stranger.pid, stranger.pid, "host:1:2/ep/7", 0.5) == 0
        assert stranger.poll() is None, "a stranger's process group was killed"
        assert groups.kill_recorded(ours.pid, ours.pid, "host:1:2/ep/6", 0.5) == 0  # another attempt's
        assert ours.poll() is None
        assert groups.kill_recorded(ours.pid, ours.pid, "host:1:2/ep/7", 0.5) == 1
        assert ours.wait(timeout=5) == -signal.SIGTERM
    finally:
        stranger.kill()
        ours.kill()
        stranger.wait()
        ours.wait()
