"""Getting an error out of the console, from the main list and from the item detail: copy the selected
item's error and log tail to the clipboard (OSC 52), or open everything about it in `$PAGER`.

The texts are built by ewg_tui/export.py (inert, no key letters). The clipboard is written with
Textual's `App.copy_to_clipboard` (OSC 52: the terminal must allow it, e.g. tmux's set-clipboard). The
pager gets the terminal through `App.suspend()`; database reads for it run in a thread worker, never on
the event loop.
"""

from __future__ import annotations

import subprocess

from textual.app import SuspendNotSupported
from textual.binding import Binding
from textual.screen import Screen

from engine.db import queries
from engine.text import one_line

from ..export import NoPager, error_copy, full_report, pager_argv
from ..keys import keys_of

REPORT_EVENTS = 200


def bindings(prefix: str, show: bool) -> list[Binding]:
    return [
        Binding(
            "y",
            "copy_error",
            "Copy error",
            show=show,
            id=f"{prefix}.copy",
            tooltip="Copy the selected item's error (class, message, suggestion) and log tail to the clipboard",
        ),
        Binding(
            "v",
            "open_pager",
            "Pager",
            show=show,
            id=f"{prefix}.pager",
            tooltip="Open the selected item's whole detail and stored log in $PAGER (less, more)",
        ),
    ]


def copy_error(screen: Screen, item: dict, attempts: list[dict]) -> None:
    """Copy and say what was copied (the toast is inert: the app's notify makes it so)."""
    copied = error_copy(item, attempts)
    if not copied.parts:
        screen.notify(
            f"Nothing to copy: {one_line(item['id'])} has no error and no log output yet.",
            title="Copy error",
            severity="warning",
        )
        return
    screen.app.copy_to_clipboard(copied.text)
    screen.notify(
        f"Copied to the clipboard: {one_line(item['id'])}'s {_listed(copied.parts)}.",
        title="Copied (OSC 52)",
    )


def _listed(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def read_report(store, item_id: str) -> str | None:
    """Everything about one item as text, for the pager (database work: call it from a thread)."""
    item = queries.item(store, item_id)
    if item is None:
        return None
    return full_report(
        item,
        queries.attempts(store, item_id),
        queries.item_checkpoints(store, item_id),
        queries.events(store, item_id, limit=REPORT_EVENTS),
    )


def open_in_pager(screen: Screen, item_id: str, text: str | None, copy_binding: str) -> None:
    """Hand the terminal to the pager with `text` on its standard input; the console comes back after.
    `copy_binding` is the id of the screen's copy key, named when the pager cannot be shown."""
    app = screen.app
    keys = keys_of(screen)
    if text is None:
        screen.notify(f"{one_line(item_id)} no longer exists.", title="Pager", severity="warning")
        return
    try:
        argv = pager_argv()
    except NoPager as exc:
        screen.notify(str(exc), title="Pager", severity="error", timeout=10)
        return
    copy_key = keys.label(copy_binding)
    try:
        with app.suspend():
            done = subprocess.run(argv, input=text.encode("utf-8", "replace"), check=False)
    except SuspendNotSupported:
        screen.notify(
            f"This terminal cannot be handed to a pager (the console cannot suspend here); "
            f"{copy_key} copies the error to the clipboard instead.",
            title="Pager",
            severity="warning",
            timeout=10,
        )
        return
    except OSError as exc:
        screen.notify(f"The pager {argv[0]} could not be started: {exc}.", title="Pager", severity="error")
        return
    if done.returncode not in (0, None):
        screen.notify(
            f"The pager {argv[0]} ended with exit status {done.returncode}.",
            title="Pager",
            severity="warning",
        )
