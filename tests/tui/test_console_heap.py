"""The console's collector: full passes only while no key comes, and at least every MAX_DEFER."""

from __future__ import annotations

import gc

from ewg_tui import heap


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_full_passes_wait_for_a_pause_in_the_keys_and_never_longer_than_max_defer(monkeypatch):
    passes: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda *a: passes.append(1) or 0)
    clock = Clock()
    collector = heap.IdleCollector(clock)
    before = gc.get_threshold()
    assert not collector.collect_if_idle()  # not enabled: nothing changes
    collector.enable()
    try:
        assert (
            gc.get_threshold()[:2] == before[:2] and gc.get_threshold()[2] >= 2**20
        )  # no automatic full pass
        collector.key_pressed()
        clock.now += heap.IDLE_AFTER / 2
        assert not collector.collect_if_idle() and not passes  # typing: it waits
        clock.now += heap.IDLE_AFTER
        assert collector.collect_if_idle() and len(passes) == 1  # a pause: it runs
        last = clock.now
        # keys without a pause: it waits, but not past MAX_DEFER since the last pass
        while clock.now + heap.IDLE_AFTER / 2 < last + heap.MAX_DEFER:
            clock.now += heap.IDLE_AFTER / 2
            collector.key_pressed()
            assert not collector.collect_if_idle()
        clock.now = last + heap.MAX_DEFER
        collector.key_pressed()
        assert collector.collect_if_idle() and len(passes) == 2
    finally:
        collector.disable()
    assert gc.get_threshold() == before
