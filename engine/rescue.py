"""Taking work back from an owner that died: one road for the engine's start-up, its watchdog and doctor.

No attempt is spent (the stage did not fail; its process did), but rescues are counted, so a stage
that kills its process every time fails the item after `[recovery] max_rescues` instead of looping.
The item's recorded stage process group is ended first (on this host; another host's processes are
out of reach), so a retry never runs alongside what is left of the dead attempt.
"""

from __future__ import annotations

from . import errors
from .config import Config
from .db import Store, work
from .owners import owner_host
from .stages import groups


def end_orphan(store: Store, config: Config, host: str, item_id: str, token: int) -> int:
    """Kill what is left of the recorded stage process group of the attempt `token` holds, if its owner
    ran on `host` (this one) and the group is still that attempt's (its lease marker). Returns the
    number of processes signalled."""
    proc = work.stage_process(store, item_id, token)
    if proc is None or not proc.pgid or owner_host(proc.owner) != host:
        return 0
    marker = groups.lease_marker(proc.owner, item_id, token)
    return groups.kill_recorded(proc.pid, proc.pgid, marker, config.engine.force_grace)


def rescue(
    store: Store,
    config: Config,
    host: str,
    item_id: str,
    token: int,
    rescues: int,
    outcome: str,
    why: str,
    now: float,
    actor: str,
) -> bool:
    """Take the item `token` holds back from its dead owner: queued again, or failed once it has been
    rescued `max_rescues` times. False when the token no longer holds it (someone else got there)."""
    give_up = rescues + 1 >= config.recovery.max_rescues
    end_orphan(store, config, host, item_id, token)  # before the item can be claimed again
    give_up_error = (
        (
            errors.PERSISTENT,
            f"worker died {rescues + 1} times on this stage",
            "The stage may crash its process; check its log, then retry.",
        )
        if give_up
        else None
    )
    with store.write() as unit:
        return unit.rescue(item_id, token, now, outcome=outcome, why=why, actor=actor, give_up=give_up_error)
