"""When the terminal goes away (ARCHITECTURE.md contract 6: work is released, not orphaned).

A closed tmux pane or a dropped SSH session hangs up the terminal. Its session leader gets SIGHUP,
but a process below a shell that outlives the hang-up gets nothing: its reads return end of file
and its writes fail with EIO. Textual's input thread then spins on the empty reads, and a console
once lived on for 90 minutes with its engine and database open. `TerminalWatch` looks at the
terminal twice a second (one ioctl); once it is gone it points the dead descriptors at /dev/null
(so the last screen writes cannot block or raise) and ends the app, whose caller then stops the
engine and releases its work. If the app does not end, the watch does it itself.

No textual import here: `ewg run` uses `detach_dead` too.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable

CHECK_EVERY = 0.5
WEDGED_AFTER = 8.0  # the app was asked to exit this long ago and has not: end the process


def state(fd: int) -> str:
    """ "tty", "gone" (a terminal that hung up) or "other" (a file, a pipe, /dev/null)."""
    import termios

    try:
        termios.tcgetattr(fd)
        return "tty"
    except termios.error as exc:
        return "gone" if exc.args and exc.args[0] in (errno.EIO, errno.ENXIO) else "other"
    except (OSError, ValueError):
        return "other"


def detach_dead(fds: tuple[int, ...] = (0, 1, 2), *, all_ttys: bool = False) -> list[int]:
    """Point every descriptor whose terminal hung up (or, with all_ttys, every terminal) at /dev/null."""
    moved = []
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in fds:
            now = state(fd)
            if now == "gone" or (all_ttys and now == "tty"):
                try:
                    os.dup2(null, fd)
                    moved.append(fd)
                except OSError:
                    pass
    finally:
        os.close(null)
    return moved


class TerminalWatch:
    """Calls `leave()` (on this watch's thread) once the terminal of fds 0-2 hangs up."""

    def __init__(
        self,
        leave: Callable[[], None],
        wedged: Callable[[], None],
        fds: tuple[int, ...] = (0, 1, 2),
        every: float = CHECK_EVERY,
        wedged_after: float = WEDGED_AFTER,
    ) -> None:
        self.fds = tuple(fd for fd in fds if state(fd) == "tty")
        self.leave, self.wedged = leave, wedged
        self.every, self.wedged_after = every, wedged_after
        self.gone = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ewg-terminal-watch", daemon=True)

    def start(self) -> TerminalWatch:
        if self.fds:
            self._thread.start()
        return self

    def stop(self) -> None:
        """The console ended on its own: nothing more to watch."""
        self._done.set()

    def _loop(self) -> None:
        while not self._done.wait(self.every):
            if all(state(fd) == "tty" for fd in self.fds):
                continue
            self.gone.set()
            detach_dead(self.fds)
            threading.Thread(target=self.leave, name="ewg-terminal-gone", daemon=True).start()
            if not self._done.wait(self.wedged_after):
                self.wedged()
            return
