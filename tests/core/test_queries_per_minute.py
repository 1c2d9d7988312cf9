"""The time view's read: attempts per minute over the last hour, each in the minute it ended."""

from __future__ import annotations

from engine.db import queries
from engine.workspace import add_episode


def add_attempt(ws, item_id, number, outcome, ended_at):
    with ws.store.write() as conn:
        conn.execute(
            "INSERT INTO attempts (item_id, stage, number, worker, lease_token, started_at, ended_at, outcome,"
            " duration, spent) VALUES (?,?,?,?,?,?,?,?,?,1)",
            (item_id, "discovered", number, "w", number, ended_at - 1, ended_at, outcome, 1.0),
        )


def test_attempts_land_in_the_minute_they_ended_and_old_ones_are_left_out(make_demo):
    ws = make_demo(count=0)
    add_episode(ws, "ep1", "demo://ep1.mp4", "Show", "Title")
    now = 1_800_000_030.0  # 30 s into a minute
    add_attempt(ws, "ep1", 1, "succeeded", now - 5)  # this minute
    add_attempt(ws, "ep1", 1, "succeeded", now - 10)
    add_attempt(ws, "ep1", 2, "failed", now - 65)  # the minute before, a retry that failed
    add_attempt(ws, "ep1", 3, "timed_out", now - 65)
    add_attempt(ws, "ep1", 1, "dead", now - 600)
    add_attempt(ws, "ep1", 1, "crashed", now - 600)  # found dead at start-up: a rescue too
    add_attempt(ws, "ep1", 4, "abandoned", now - 65)  # fenced out after a stall: a failure
    add_attempt(ws, "ep1", 1, "succeeded", now - 3700)  # more than an hour ago: not shown
    data = queries.per_minute(ws.store, now, minutes=60)
    assert len(data.completed) == 60 and data.start == 1_800_000_060.0 - 3600
    assert data.completed[-1] == 2 and sum(data.completed) == 2
    assert data.failed[-2] == 3 and sum(data.failed) == 3
    assert data.retries[-2] == 3 and sum(data.retries) == 3
    assert data.rescued[-11] == 2 and sum(data.rescued) == 2
