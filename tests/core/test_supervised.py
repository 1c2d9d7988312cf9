"""The watchdog knows the engine only through engine.supervised.WatchdogHost: any object with that
shape will do, so it can be driven (and tested) without an Engine, its threads or its run table."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from engine.watchdog import DEAD, Watchdog


@dataclass
class Host:
    ws: object
    owner: str = "me:1:1"
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    mine: set[str] = field(default_factory=set)
    rescued: list[tuple[str, int, str]] = field(default_factory=list)
    leading: bool = True

    def __post_init__(self):
        self.config, self.store, self.clock = self.ws.config, self.ws.store, self.ws.clock

    def halted(self, seconds: float) -> bool:
        return True

    def wake(self) -> None:
        """No dispatcher here: the test drives the watchdog itself."""

    def leads(self) -> bool:
        return self.leading

    def runs_here(self, item_id: str) -> bool:
        return item_id in self.mine

    def rescue(self, item_id, token, rescues, outcome, why, now, actor="engine") -> bool:
        self.rescued.append((item_id, token, actor))
        return True

    def cancel_local(self, item_id: str, reason: str) -> None:
        """No stages run here to cancel."""


def test_the_watchdog_rescues_another_owners_silent_work_and_leaves_its_own(make_demo):
    ws = make_demo(count=2)
    now = time.time()
    theirs = ws.store.claim("other-host:7:7", now, 30)
    mine = ws.store.claim("me:1:1", now, 30)
    host = Host(ws, mine={mine.item_id})
    later = now + ws.config.engine.dead_after + 1  # both heartbeats are now past dead_after
    verdicts = Watchdog(host).check(later)
    assert verdicts[theirs.item_id] == DEAD
    assert verdicts.get(mine.item_id) != DEAD  # its own run is judged on progress, never rescued
    assert host.rescued == [(theirs.item_id, theirs.lease_token, "watchdog")]


def test_the_watchdog_loop_ends_when_its_host_has_halted(make_demo):
    host = Host(make_demo(count=1))
    Watchdog(host).loop()  # returns at once: halted() says the engine stopped its loops


def test_only_the_leading_host_rescues_another_hosts_silent_work(make_demo):
    """Across hosts a stale heartbeat is judged once per site, by the leader; others leave it alone
    (and never call it STALLED meanwhile)."""
    ws = make_demo(count=1)
    now = time.time()
    theirs = ws.store.claim("other-host:7:7", now, 30)
    follower = Host(ws, leading=False)
    later = now + ws.config.engine.dead_after + 1
    assert Watchdog(follower).check(later) == {}
    assert follower.rescued == []
    leader = Host(ws)
    assert Watchdog(leader).check(later)[theirs.item_id] == DEAD
