"""Store.reader(): a connection of its own whose stale reads another thread may cancel."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from engine.db import ReadInterrupted

# Counts to a billion: minutes of work unless it is interrupted.
ENDLESS = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000)"
    " SELECT max(x) FROM c"
)


def test_interrupt_cancels_the_read_in_flight_and_nothing_else(make_demo):
    ws = make_demo(count=2)
    reader = ws.store.reader()
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(reader.read(ENDLESS))
        except ReadInterrupted as exc:
            outcome.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    time.sleep(0.2)  # the scan is running
    started = time.monotonic()
    reader.interrupt()
    thread.join(5)
    assert not thread.is_alive() and isinstance(outcome[0], ReadInterrupted)
    assert time.monotonic() - started < 2
    with pytest.raises(ReadInterrupted):  # until resumed: a read started before resume() is stale too
        reader.read_one("SELECT COUNT(*) FROM items")
    reader.resume()
    assert reader.read_one("SELECT COUNT(*) FROM items")[0] == 2
    with ws.store.write() as conn:  # the store's own connections never saw the interrupt
        conn.execute("UPDATE items SET title='still writable'")


def test_a_reader_cannot_write(make_demo):
    ws = make_demo(count=1)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        ws.store.reader().read("UPDATE items SET title='x'")
