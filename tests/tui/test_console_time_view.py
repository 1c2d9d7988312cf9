"""`t` opens the time view: per-minute charts of throughput, failures, retries and rescues."""

from __future__ import annotations

from pilot_helpers import make_app, ready, wait_for

from engine.db import queries
from ewg_tui.screens.time_view import TimeViewScreen


async def test_t_shows_the_last_hour_per_minute_and_esc_goes_back(seeded):
    ws, clock = seeded
    expected = queries.per_minute(ws.store, clock.now(), 60)
    assert sum(expected.completed) > 0 and sum(expected.failed) > 0  # the seeded hour has both
    app = make_app(ws, clock)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("t")
        screen = await wait_for(
            pilot, lambda: isinstance(app.screen, TimeViewScreen) and app.screen, what="view"
        )
        chart = screen.query_one("#completed-chart")
        await wait_for(pilot, lambda: list(chart.data) == expected.completed, what="the chart's data")
        text = str(screen.query_one("#completed-summary").render())
        assert f"last hour {sum(expected.completed)}" in text
        assert f"peak {max(expected.completed)}" in text
        failed = str(screen.query_one("#failed-summary").render())
        assert f"last hour {sum(expected.failed)}" in failed
        assert list(screen.query_one("#failed-chart").data) == expected.failed
        await pilot.press("escape")
        assert not isinstance(app.screen, TimeViewScreen)
