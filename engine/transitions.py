"""The SQL that ends an attempt, shared by the worker, the watchdog and the verbs.

Every function runs inside the caller's write transaction and is fenced by
the lease token: it changes nothing (and returns False) when the token no
longer holds the item.
"""
from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterable

from .policy import Decision

RELEASED = dict(lease_owner=None, lease_expires_at=None, cancel_requested=None, cancel_requested_at=None)


def _fenced(conn: sqlite3.Connection, item_id: str, token: int, values: dict[str, Any], bump: bool) -> bool:
    sets = ", ".join(f"{k}=?" for k in values)
    if bump:
        sets += ", lease_token=lease_token+1"
    cur = conn.execute(f"UPDATE items SET {sets} WHERE id=? AND lease_token=? AND status='running'",
                       (*values.values(), item_id, token))
    return cur.rowcount == 1


def close_attempt(conn: sqlite3.Connection, item_id: str, token: int, now: float, outcome: str,
                  error: tuple[str | None, str | None, str | None] = (None, None, None),
                  decision: str = "", log_tail: str | None = None, spent: bool = True) -> None:
    conn.execute(
        """UPDATE attempts SET ended_at=?, outcome=?, error_class=?, error_message=?, error_detail=?,
               decision=?, log_tail=COALESCE(?, log_tail), duration=? - started_at, spent=?
           WHERE item_id=? AND lease_token=? AND ended_at IS NULL""",
        (now, outcome, *error, decision, log_tail, now, int(spent), item_id, token))


def settle_failure(conn: sqlite3.Connection, item_id: str, token: int, now: float, outcome: str,
                   decision: Decision, error_class: str, message: str, detail: str, suggestion: str,
                   verdict: str | None = None, log_tail: str | None = None, bump: bool = False,
                   blocked_reason: str | None = None) -> bool:
    """A failed, timed-out or stalled attempt: record it and take the decided road."""
    ok = _fenced(conn, item_id, token, {
        **RELEASED, "status": decision.status, "attempts": decision.attempts,
        "next_attempt_at": decision.next_attempt_at, "error_class": error_class, "error_message": message,
        "error_detail": detail, "error_suggestion": suggestion, "error_at": now, "verdict": verdict,
        "blocked_reason": (blocked_reason or message) if decision.status == "blocked" else None, "updated_at": now,
    }, bump)
    if ok:
        close_attempt(conn, item_id, token, now, outcome, (error_class, message, detail), decision.text,
                      log_tail, decision.spent)
    return ok


def release(conn: sqlite3.Connection, item_id: str, token: int, now: float, outcome: str, status: str,
            decision: str, log_tail: str | None = None, bump: bool = False, verdict: str | None = None,
            count_rescue: bool = False) -> bool:
    """Give the item back without spending an attempt (shutdown, stop, dead owner)."""
    values = {**RELEASED, "status": status, "next_attempt_at": now, "updated_at": now, "verdict": verdict,
              "progress_message": decision}
    if count_rescue:
        conn.execute("UPDATE items SET rescues = rescues + 1 WHERE id=? AND lease_token=?", (item_id, token))
    ok = _fenced(conn, item_id, token, values, bump)
    if ok:
        close_attempt(conn, item_id, token, now, outcome, decision=decision, log_tail=log_tail, spent=False)
    return ok


def record_event(conn: sqlite3.Connection, now: float, actor: str, verb: str, *, selection: str = "",
                 reason: str = "", affected: Iterable[str] = (), before: dict | None = None,
                 after: dict | None = None, result: str = "") -> int:
    cur = conn.execute(
        "INSERT INTO events (at, actor, verb, selection, reason, affected, before, after, result)"
        " VALUES (?,?,?,?,?,?,?,?,?)",
        (now, actor, verb, selection, reason, json.dumps(list(affected)), json.dumps(before or {}),
         json.dumps(after or {}), result))
    return int(cur.lastrowid)
