"""Who holds a lease: an engine's identity (`host:pid:start`) and whether that process still lives.

The identity names its host, so a process on the same host can be checked at once (a PID that
is gone, or reused by another process started at another time, is dead); an owner on another
host can only be judged by its heartbeat.
"""

from __future__ import annotations

import os
import socket

import psutil


def owner_id() -> str:
    me = psutil.Process()
    return f"{socket.gethostname()}:{os.getpid()}:{int(me.create_time())}"


def owner_host(owner: str) -> str:
    return owner.rsplit(":", 2)[0] if owner.count(":") >= 2 else ""


def owner_alive(owner: str) -> bool | None:
    """True/False for an owner on this host, None when it runs elsewhere (only its lease can tell)."""
    try:
        host, pid, started = owner.rsplit(":", 2)
        pid_n, started_n = int(pid), int(started)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        return abs(int(psutil.Process(pid_n).create_time()) - started_n) <= 1
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False
