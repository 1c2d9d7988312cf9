"""The audit screen's "Cost of recovery" line: failed runs, retries, rescues and paused time, kept live."""

from __future__ import annotations

from pilot_helpers import make_app, ready, wait_for

from engine.verbs import Operator


async def test_the_audit_screen_shows_the_cost_of_recovery_and_paused_time(seeded):
    from ewg_tui.screens.audit_log import AuditLogScreen

    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(160, 40)) as pilot:
        await ready(pilot)
        await pilot.press("l")
        audit = await wait_for(
            pilot, lambda: isinstance(app.screen, AuditLogScreen) and app.screen, what="the audit log"
        )
        panel = audit.query_one("#audit-metrics")
        line = await wait_for(
            pilot,
            lambda: next(
                (x for x in str(panel.render()).splitlines() if x.startswith("Cost of recovery")), None
            ),
            what="the cost line",
        )
        # the seeded history: three failed runs (34 s transient, 5 s missing dependency, 1.2 s persistent)
        assert "3 failed runs 40s" in line and "0 retries 0s" in line and "0 rescues 0s" in line
        assert "85% of stage time wasted" in line
        assert "worst: episode transcribed transient ×1 34s" in line
        assert "paused" not in line

        operator = Operator(ws, actor="alice")
        operator.pause(reason="maintenance")
        clock.advance(90)
        operator.unpause()
        line = await wait_for(
            pilot,
            lambda: next((x for x in str(panel.render()).splitlines() if "paused 1m30s" in x), None),
            timeout=8,
            what="the paused time to appear",
        )
        assert line.startswith("Cost of recovery") and "runs lost" in line
