"""Telling systemd how `ewg run` is doing: READY, STATUS, WATCHDOG and STOPPING (sd_notify(3)).

With `Type=notify` in the unit, systemd waits for READY=1 before it calls the service started, and
with `WatchdogSec=` it restarts an engine that stops sending WATCHDOG=1 (a hung process, not only
a dead one). The protocol is one datagram per message on the AF_UNIX socket named by
$NOTIFY_SOCKET ("@..." is an abstract socket), so no package is needed for it. Outside systemd
(no $NOTIFY_SOCKET) every call does nothing.

The watchdog is fed only while the engine's own loops are alive (the caller passes a liveness
check), so a frozen dispatcher is restarted by systemd rather than kept alive by a timer thread.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger("ewg.systemd")


class Notifier:
    """One per `ewg run`; safe to use when not under systemd."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET", "")
        self.watchdog_interval = self._watchdog_interval(env)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _watchdog_interval(env: dict[str, str]) -> float | None:
        """Half of WatchdogSec (sd_watchdog_enabled(3)), when the watchdog is meant for this process."""
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) <= 0 or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 1e6 / 2

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` fields as one message; False (and a debug line) when it could not be sent."""
        if not self.address:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        message = "\n".join(f.replace("\n", " ") for f in fields).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, target)
            return True
        except OSError as exc:  # systemd gone or the socket not ours: the engine goes on regardless
            log.debug("sd_notify to %s failed: %s", self.address, exc)
            return False

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self, status: str = "stopping: releasing running work") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def start_watchdog(self, alive: Callable[[], bool]) -> None:
        """Send WATCHDOG=1 every half WatchdogSec while `alive()` says the engine is working."""
        if not self.enabled or self.watchdog_interval is None or self._thread is not None:
            return
        interval = self.watchdog_interval

        def feed() -> None:
            while not self._stop.wait(interval):
                try:
                    healthy = alive()
                except Exception:  # noqa: BLE001 - a failing check means: not healthy
                    healthy = False
                if healthy:
                    self.send("WATCHDOG=1")
                else:
                    log.warning("engine loops are not alive: not feeding the systemd watchdog")

        self._thread = threading.Thread(target=feed, name="sd-watchdog", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
