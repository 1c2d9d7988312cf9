"""engine.rescue: the one road that takes work back from a dead owner (start-up, watchdog, doctor)."""

from __future__ import annotations

import time

from engine import rescue
from engine.owners import owner_host, owner_id


def test_a_rescued_item_is_queued_again_without_spending_an_attempt(make_demo):
    ws = make_demo(count=1)
    claim = ws.store.claim("gone-host:1:1", time.time(), 30)
    host = owner_host(owner_id())
    assert rescue.rescue(
        ws.store, ws.config, host, claim.item_id, claim.lease_token, 0, "dead", "gone", time.time(), "t"
    )
    row = ws.store.read_one(
        "SELECT status, attempts, rescues, lease_token FROM items WHERE id=?", (claim.item_id,)
    )
    assert (row["status"], row["attempts"], row["rescues"]) == ("queued", 0, 1)
    assert row["lease_token"] == claim.lease_token + 1
    # the same lease again (a second sweep that read it before the first committed): refused
    assert not rescue.rescue(
        ws.store, ws.config, host, claim.item_id, claim.lease_token, 0, "dead", "again", time.time(), "t"
    )


def test_the_last_rescue_fails_the_item_with_what_to_do(make_demo):
    ws = make_demo(count=1)
    claim = ws.store.claim("gone-host:1:1", time.time(), 30)
    last = ws.config.recovery.max_rescues - 1
    assert rescue.rescue(
        ws.store,
        ws.config,
        "this-host",
        claim.item_id,
        claim.lease_token,
        last,
        "crashed",
        "gone",
        time.time(),
        "t",
    )
    row = ws.store.read_one("SELECT * FROM items WHERE id=?", (claim.item_id,))
    assert (row["status"], row["error_class"]) == ("failed", "persistent")
    assert row["error_message"] == f"worker died {last + 1} times on this stage"
    assert "retry" in row["error_suggestion"]


def test_an_owner_on_another_host_has_no_process_here_to_end(make_demo):
    ws = make_demo(count=1)
    claim = ws.store.claim("elsewhere:1:1", time.time(), 30)
    with ws.store.write() as unit:  # a group id that, were it ended, would be this test's own
        assert unit.record_stage_process(claim.item_id, claim.lease_token, 1, 1)
    assert rescue.end_orphan(ws.store, ws.config, "this-host", claim.item_id, claim.lease_token) == 0
    assert rescue.end_orphan(ws.store, ws.config, "this-host", claim.item_id, claim.lease_token + 1) == 0
