"""Pilot helpers: build the app, wait for the first read, drive the tables, wait for conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from engine.db import queries
from ewg_tui.app import EwgApp
from ewg_tui.screens.main import MainScreen
from ewg_tui.widgets.item_table import ItemTable


def make_app(ws, clock, **kw) -> EwgApp:
    kw.setdefault("poll_interval", 0.3)
    kw.setdefault("actor", "tester")
    kw.setdefault("cursor_blink", False)
    kw.setdefault("first_run_hint", False)
    return EwgApp(ws, clock=clock, **kw)


async def wait_for(pilot, condition: Callable[[], object], timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def main_screen(app) -> MainScreen:
    for screen in app.screen_stack:
        if isinstance(screen, MainScreen):
            return screen
    raise AssertionError("main screen not on the stack")


async def ready(pilot) -> MainScreen:
    """Wait until the main screen has shown its first full read."""
    await wait_for(
        pilot,
        lambda: any(
            isinstance(s, MainScreen) and s.view is not None and s.view.overview
            for s in pilot.app.screen_stack
        ),
        what="first read",
    )
    await pilot.pause(0.05)
    return main_screen(pilot.app)


async def move_to(pilot, table: ItemTable, item_id: str) -> None:
    """Put the cursor on `item_id`, sliding the window down with `j` when it is not visible yet."""
    await wait_for(pilot, lambda: table.order, what="rows in the table")
    table.focus()
    for _ in range(200):
        if item_id in table.order:
            break
        before = (table.window_offset, table.cursor_row)
        await pilot.press("j")
        await wait_for(
            pilot,
            lambda before=before: (table.window_offset, table.cursor_row) != before,
            what="the cursor to move",
        )
    table.move_cursor(row=table.order.index(item_id), animate=False)
    await pilot.pause(0.05)
    screen = main_screen(pilot.app)
    await wait_for(
        pilot,
        lambda: (
            screen.view is not None and screen.view.detail is not None and screen.view.detail["id"] == item_id
        ),
        what=f"{item_id} selected",
    )


def row_text(table: ItemTable, item_id: str, column: str) -> str:
    cell = table.get_cell(item_id, column)
    return getattr(cell, "plain", str(cell))


def item(ws, item_id: str) -> dict:
    row = queries.item(ws.store, item_id)
    assert row is not None
    return row


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


def before_each_read(monkeypatch, hook: Callable) -> None:
    """Call `hook(request)` on the poll worker before each of the main screen's reads (to record
    what is asked, or to hold a read back), then read as the screen does."""
    from ewg_tui.screens import main as main_module

    real = main_module.read_view

    def read_view(reader, request, now, shown=None):
        hook(request)
        return real(reader, request, now, shown)

    monkeypatch.setattr(main_module, "read_view", read_view)
