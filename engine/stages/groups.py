"""Stage process groups: no stage process outlives its attempt (ARCHITECTURE.md contract 6).

A stage's program starts in its own session, so its process group holds everything it forks. On
Linux it also gets PR_SET_PDEATHSIG: it is SIGKILLed when the engine thread that started it dies, a
kill -9 of the engine included. `Group.end` runs after the program exits and before the engine
publishes its output: whatever the program left running in its group (a background child still
writing into the output folder) is sent SIGTERM, given the grace period, then SIGKILLed. A group
id cannot be reused while any member lives, so the signals reach only the stage's group.

The engine records the group with the lease (`items.stage_pid/stage_pgid`). After a crash,
`kill_recorded` ends a dead owner's group before its item runs again. A PID may be reused, so
the group is killed only if one of its live members carries the attempt's lease marker in its
environment (`EWG_STAGE_LEASE`, set for every stage program): a stranger's group is never touched.

What remains possible: a process that leaves the group (`setsid`, a double fork into a new
session, a daemon) escapes all of this, as it escapes any supervisor short of a cgroup.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger("ewg.stages")

LEASE_ENV = "EWG_STAGE_LEASE"
_PR_SET_PDEATHSIG = 1
_POLL = 0.02


def lease_marker(owner: str, item_id: str, token: int) -> str:
    """Unique per attempt on this host: the engine's identity (host:pid:start), the item and its token."""
    return f"{owner}/{item_id}/{token}"


def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork: the child only calls it
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


_AUTOGROUP_TRIES = 20  # the kernel takes one autogroup change per 100 ms from unprivileged users
_AUTOGROUP_RETRY = 0.1


def lower_session(pid: int) -> None:
    """Give the session that `pid` leads the CPU priority (nice value) `pid` runs at.

    A nice value only ranks a process among the others of its scheduling group, and with
    CONFIG_SCHED_AUTOGROUP (on by default on desktop and server kernels alike) every session is a
    group of its own that shares the CPU equally with every other group: a stage in a new session at
    nice 19 took as much CPU from the console as one at nice 0 (measured: two niced encoders left the
    console a third of the cores). So its session's autogroup gets the same nice value. Raising it
    needs no privilege; the kernel takes one such change per 100 ms from unprivileged users
    (EAGAIN), so a refusal is retried on a thread of its own for two seconds, then logged.
    """
    try:
        nice = os.getpriority(os.PRIO_PROCESS, pid)
        if nice <= 0 or os.getsid(pid) != pid:  # never change the group of a session we share
            return
    except OSError:  # it already ended
        return
    if _write_autogroup(pid, nice) is None:
        threading.Thread(
            target=_retry_autogroup, args=(pid, nice), name=f"autogroup-{pid}", daemon=True
        ).start()


def _write_autogroup(pid: int, nice: int) -> bool | None:
    """True when written, False when it cannot be (no autogroups, the process ended), None to retry."""
    try:
        with open(f"/proc/{pid}/autogroup", "w") as fh:
            fh.write(str(nice))
        return True
    except BlockingIOError:
        return None
    except OSError:
        return False


def _retry_autogroup(pid: int, nice: int) -> None:
    for _ in range(_AUTOGROUP_TRIES):
        time.sleep(_AUTOGROUP_RETRY)
        written = _write_autogroup(pid, nice)
        if written is not None:
            return
    log.info("stage process %d keeps its session's CPU share: the kernel refused its nice value", pid)


def popen(argv: list[str], *, nice: int = 0, **kwargs) -> subprocess.Popen:
    """Popen in a new session that dies with the engine thread that starts it (PR_SET_PDEATHSIG).

    The program runs at `nice` on top of the caller's own, and so does its session (lower_session):
    a heavy stage yields the cores to the console, and so does whatever program a niced worker starts.
    """
    parent = os.getpid()
    prctl = _PRCTL

    def die_with_engine() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the engine died before the signal was armed
            os._exit(1)
        if nice > 0:
            os.nice(nice)

    proc = subprocess.Popen(argv, start_new_session=True, preexec_fn=die_with_engine, **kwargs)
    lower_session(proc.pid)
    return proc


def members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`."""
    found = []
    if os.path.isdir("/proc"):
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
                try:
                    data = os.read(fd, 4096)
                finally:
                    os.close(fd)
            except OSError:
                continue
            fields = data[data.rfind(b")") + 2 :].split()
            if len(fields) > 2 and fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid:
                found.append(int(name))
        return found
    import psutil

    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
    return found


def end_group(pgid: int, grace: float) -> int:
    """SIGTERM group `pgid`, wait up to `grace` seconds for it to empty, SIGKILL the rest.

    Returns how many live processes it had. Call it only for a group known to be the stage's: one
    with a member just seen (the id cannot be reused while any member lives)."""
    live = members(pgid)
    if not live:
        return 0
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return len(live)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and members(pgid):
        time.sleep(_POLL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and members(pgid):
        time.sleep(_POLL)
    return len(live)


def _carries(pid: int, marker: str) -> bool:
    needle = f"{LEASE_ENV}={marker}".encode()
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return needle in fh.read().split(b"\0")
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process(pid).environ().get(LEASE_ENV) == marker
    except Exception:  # noqa: BLE001 - gone, not ours, or not readable: not provably ours
        return False


def kill_recorded(pid: int | None, pgid: int | None, marker: str, grace: float) -> int:
    """End the recorded group of a dead owner's attempt, if it is still that attempt's group.

    Returns how many live processes it held (0: nothing left, or the id now belongs to a stranger)."""
    if not pgid or pgid <= 1 or pgid == os.getpgid(0):
        return 0
    live = members(pgid)
    if not live:
        return 0
    if not any(_carries(p, marker) for p in live):
        log.warning(
            "process group %d (stage pid %s) no longer belongs to attempt %s: left alone", pgid, pid, marker
        )
        return 0
    n = end_group(pgid, grace)
    log.warning("killed %d leftover process(es) of attempt %s (group %d)", n, marker, pgid)
    return n


def exited(pid: int) -> bool:
    """Has the child `pid` exited? It is left a zombie (not reaped), so its PID stays taken."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when `pid` exits (Linux 5.3+), or None."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


class Group:
    """The process group of one stage program, ended exactly once."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.pgid = proc.pid
        self._lock = threading.Lock()
        self._ended = False

    def kill(self) -> None:
        """Force stop (any thread): SIGKILL the whole group at once."""
        with self._lock:
            if not self._ended:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pgid, signal.SIGKILL)

    def end(self, grace: float) -> int:
        """SIGTERM, grace, SIGKILL for everything left in the group; the leader is reaped.

        The usual case costs one system call: the leader has exited, is reaped, and the group is empty.
        A group id stays taken while any member lives, so after the reap `killpg` still reaches only
        this group."""
        with self._lock:
            if self._ended:
                return 0
        n = 0
        if not exited(self.proc.pid):  # a cancel: the leader itself is still running
            n = end_group(self.pgid, grace)
        self.proc.wait()
        try:
            os.killpg(self.pgid, 0)
        except (ProcessLookupError, PermissionError):
            pass  # nothing left in the group
        else:
            n += end_group(self.pgid, grace)
        with self._lock:
            self._ended = True
        return n
