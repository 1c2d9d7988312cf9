"""The SQL that ends an attempt, shared by the worker, the watchdog and the verbs.

Every function runs inside the caller's write transaction. Those that end an
attempt are fenced by the lease token: they change nothing (settle_failure and
release return False) when the token no longer holds the item.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from .policy import Decision

RELEASED = dict(lease_owner=None, lease_expires_at=None, cancel_requested=None, cancel_requested_at=None)


def _fenced(conn: sqlite3.Connection, item_id: str, token: int, values: dict[str, Any], bump: bool) -> bool:
    sets = ", ".join(f"{k}=?" for k in values)
    if bump:
        sets += ", lease_token=lease_token+1"
    cur = conn.execute(
        f"UPDATE items SET {sets} WHERE id=? AND lease_token=? AND status='running'",
        (*values.values(), item_id, token),
    )
    return cur.rowcount == 1


def close_attempt(
    conn: sqlite3.Connection,
    item_id: str,
    token: int,
    now: float,
    outcome: str,
    error: tuple[str | None, str | None, str | None] = (None, None, None),
    decision: str = "",
    log_tail: str | None = None,
    spent: bool = True,
) -> None:
    """Record the end of the attempt that holds the item's lease. Call it before the item row
    releases the lease: the attempt row is written from the lease (stage, number, owner, start).

    An attempt has no row while it runs (Store.claim_batch); one opened by an older ewg is closed
    in place instead."""
    params = (now, outcome, *error, decision, log_tail, int(spent), item_id, token)
    holds = "EXISTS (SELECT 1 FROM items WHERE id=?9 AND lease_token=?10 AND status='running')"
    cur = conn.execute(
        f"""UPDATE attempts SET ended_at=?1, outcome=?2, error_class=?3, error_message=?4, error_detail=?5,
               decision=?6, log_tail=COALESCE(?7, log_tail), duration=?1 - started_at, spent=?8
           WHERE item_id=?9 AND lease_token=?10 AND ended_at IS NULL AND {holds}""",
        params,
    )
    if cur.rowcount:
        return
    conn.execute(
        """INSERT INTO attempts (item_id, stage, number, worker, lease_token, started_at, ended_at, outcome,
               error_class, error_message, error_detail, decision, log_tail, duration, spent)
           SELECT id, next_stage, attempts + 1, COALESCE(lease_owner, ''), lease_token,
                  COALESCE(started_at, ?1), ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?1 - COALESCE(started_at, ?1), ?8
           FROM items WHERE id=?9 AND lease_token=?10 AND status='running'""",
        params,
    )


def settle_failure(
    conn: sqlite3.Connection,
    item_id: str,
    token: int,
    now: float,
    outcome: str,
    decision: Decision,
    error_class: str,
    message: str,
    detail: str,
    suggestion: str,
    verdict: str | None = None,
    log_tail: str | None = None,
    bump: bool = False,
    blocked_reason: str | None = None,
) -> bool:
    """A failed, timed-out or stalled attempt: record it and take the decided road."""
    close_attempt(
        conn,
        item_id,
        token,
        now,
        outcome,
        (error_class, message, detail),
        decision.text,
        log_tail,
        decision.spent,
    )  # first: written from the lease the update releases
    return _fenced(
        conn,
        item_id,
        token,
        {
            **RELEASED,
            "status": decision.status,
            "attempts": decision.attempts,
            "next_attempt_at": decision.next_attempt_at,
            "error_class": error_class,
            "error_message": message,
            "error_detail": detail,
            "error_suggestion": suggestion,
            "error_at": now,
            "verdict": verdict,
            "blocked_reason": (blocked_reason or message) if decision.status == "blocked" else None,
            "updated_at": now,
        },
        bump,
    )


def release(
    conn: sqlite3.Connection,
    item_id: str,
    token: int,
    now: float,
    outcome: str,
    status: str,
    decision: str,
    log_tail: str | None = None,
    bump: bool = False,
    verdict: str | None = None,
    count_rescue: bool = False,
) -> bool:
    """Give the item back without spending an attempt (shutdown, stop, dead owner)."""
    values = {
        **RELEASED,
        "status": status,
        "next_attempt_at": now,
        "updated_at": now,
        "verdict": verdict,
        "progress_message": decision,
    }
    if count_rescue:
        conn.execute(
            "UPDATE items SET rescues = rescues + 1 WHERE id=? AND lease_token=? AND status='running'",
            (item_id, token),
        )
    close_attempt(conn, item_id, token, now, outcome, decision=decision, log_tail=log_tail, spent=False)
    return _fenced(conn, item_id, token, values, bump)


def record_event(
    conn: sqlite3.Connection,
    now: float,
    actor: str,
    verb: str,
    *,
    selection: str = "",
    reason: str = "",
    affected: Iterable[str] = (),
    before: dict | None = None,
    after: dict | None = None,
    result: str = "",
) -> int:
    cur = conn.execute(
        "INSERT INTO events (at, actor, verb, selection, reason, affected, before, after, result)"
        " VALUES (?,?,?,?,?,?,?,?,?)",
        (
            now,
            actor,
            verb,
            selection,
            reason,
            json.dumps(list(affected)),
            json.dumps(before or {}),
            json.dumps(after or {}),
            result,
        ),
    )
    return int(cur.lastrowid)


def set_switch(
    conn: sqlite3.Connection, key: str, value: str, *, reason: str, actor: str, now: float
) -> None:
    """Write one engine_state switch (pause, resource pause, warnings...), whoever holds it."""
    conn.execute(
        "INSERT INTO engine_state (key, value, reason, actor, at) VALUES (?,?,?,?,?)"
        " ON CONFLICT(key) DO UPDATE SET value=excluded.value, reason=excluded.reason,"
        " actor=excluded.actor, at=excluded.at",
        (key, value, reason, actor, now),
    )
