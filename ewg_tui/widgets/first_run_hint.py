"""The first run's one-line hint: where the legend is. Any key hides it for good.

Remembered in $XDG_STATE_HOME/ewg/hint-seen (~/.local/state/ewg/hint-seen), written owner-only (0600, in
a 0700 folder): it is per person, not per workspace (docs/ARCHITECTURE.md, "The boundary": files are
owner-only).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from textual.content import Content
from textual.widgets import Static

from ..keys import keys_of
from . import formatting as fmt

TEXT = "First run: {help} explains the marks ({marks}) and every key. Any key hides this."


def hint_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "ewg" / "hint-seen"


def hint_seen() -> bool:
    return hint_path().exists()


def remember_hint_seen() -> None:
    """Write the marker owner-only; a read-only home only means the hint shows again next time."""
    path = hint_path()
    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as marker:
            marker.write("the console's first-run hint was shown and dismissed\n")


class FirstRunHint(Static):
    DEFAULT_CSS = """
    FirstRunHint {
        height: 1;
        padding: 0 1;
        background: $accent 25%;
        color: $foreground;
        text-style: bold;
    }
    """

    def __init__(self) -> None:
        super().__init__(id="first-run-hint")

    def on_mount(self) -> None:  # the help key is the active one (the keymap may have moved it)
        marks = " ".join(fmt.glyph(k) for k in ("done", "running", "retrying", "blocked", "failed"))
        self.update(Content(TEXT.format(help=keys_of(self).label("main.help"), marks=marks)))
