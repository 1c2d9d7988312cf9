"""`ewg run` under systemd: READY, STATUS, WATCHDOG and STOPPING on $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from engine.sd_notify import Notifier


@pytest.fixture
def listener(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    yield str(path), sock
    sock.close()


def messages(sock, until: str, timeout: float = 30) -> list[str]:
    got, end = [], time.time() + timeout
    while time.time() < end:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if until in got[-1]:
            break
    return got


def test_ready_status_and_stopping_reach_the_socket(listener):
    path, sock = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.ready("running with 2 worker(s)")
    first = sock.recv(4096).decode().split("\n")
    assert "READY=1" in first and "STATUS=running with 2 worker(s)" in first
    assert f"MAINPID={os.getpid()}" in first
    notifier.stopping()
    assert "STOPPING=1" in sock.recv(4096).decode().split("\n")


def test_without_systemd_nothing_is_sent_and_nothing_fails():
    notifier = Notifier({})
    assert not notifier.enabled and notifier.send("READY=1") is False
    notifier.start_watchdog(lambda: True)  # no thread, no error
    notifier.close()


def test_the_watchdog_is_fed_only_while_the_engine_is_alive(listener):
    path, sock = listener
    alive = {"value": True}
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())})
    assert notifier.watchdog_interval == pytest.approx(0.1)
    notifier.start_watchdog(lambda: alive["value"])
    try:
        assert sock.recv(4096).decode() == "WATCHDOG=1"
        alive["value"] = False
        time.sleep(0.3)
        sock.settimeout(0.05)
        with pytest.raises(TimeoutError):  # drain what was sent before the switch, then silence
            while True:
                sock.recv(4096)
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(4096)
    finally:
        notifier.close()
    assert (
        Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}).watchdog_interval
        is None
    )


def test_ewg_run_says_ready_then_stopping(listener, make_demo):
    path, sock = listener
    ws = make_demo(count=2)
    env = dict(os.environ, NOTIFY_SOCKET=path)
    proc = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", "-w", str(ws.root), "run", "--until-idle", "--quiet"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got = messages(sock, "STOPPING=1")
    assert got and "READY=1" in got[0].split("\n")
    assert "STOPPING=1" in got[-1].split("\n")


def test_ewg_run_log_format_json_is_one_object_a_line_with_iso_z_times(make_demo):
    import json
    import re

    ws = make_demo(count=2)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ewg_tui.cli",
            "-w",
            str(ws.root),
            "run",
            "--until-idle",
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]  # every stdout line is one object
    assert events and all({"at", "event", "item", "stage", "text"} <= set(e) for e in events)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", e["at"]) for e in events)
    assert sum(e["event"] == "succeeded" for e in events) >= 5  # two episodes through their stages
    assert "running with" in proc.stderr  # the human lines moved to stderr


def test_ewg_run_plain_lines_start_with_an_iso_z_time(make_demo):
    import re

    ws = make_demo(count=1)
    proc = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", "-w", str(ws.root), "run", "--until-idle"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if re.match(r"\d{4}-", line)]
    assert lines and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", line) for line in lines)
