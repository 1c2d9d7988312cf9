"""A database server that stops answering is said in the header, once, and cleared when it answers."""

from __future__ import annotations

import psycopg
from pilot_helpers import make_app, ready, wait_for

from ewg_tui.widgets.engine_header import EngineHeader, HeaderState, engine_summary


def test_the_header_names_an_unreachable_database_and_what_goes_on():
    label, level, _busy, _workers = engine_summary(HeaderState("ws", db_lost_since=0.0))
    assert label.startswith("database unreachable since 00:00:00Z")
    assert "running stages go on" in label and level == "error"


async def test_reads_that_lose_the_server_show_in_the_header_not_as_toasts(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        reader = screen._reader
        real = reader.read

        def lost(*_a, **_k):
            raise psycopg.OperationalError("server closed the connection unexpectedly")

        reader.read = lost
        screen.poll(True)
        header = screen.query_one(EngineHeader)
        await wait_for(pilot, lambda: "database unreachable" in str(header.render()), what="the header")
        assert not [n for n in app._notifications if "Reading the workspace failed" in n.message]
        reader.read = real
        screen.poll(True)
        await wait_for(pilot, lambda: "database unreachable" not in str(header.render()), what="recovery")
