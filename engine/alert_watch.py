"""What becomes an alert: the engine's audit trail, read as a feed.

Every state change worth a person's attention already lands in the `events` table in the
transaction that made it (a failure that waits for an operator, a STALLED or TIMED OUT verdict,
a resource pause, a service going down). `AlertWatch.tick()` reads the events after a cursor and
turns them into `Alert`s, so alerts follow whichever process or thread made the change.

Several engines may share one database: the cursor (`engine_state` key `alerts_cursor`) is moved
with a compare-and-swap, and only the engine whose swap wins sends that stretch of the feed. A crash
between the swap and the send loses those alerts (at most once: an alert is a nudge, the audit log
is the record).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

from .alerts import Alert, Alerter, AlertEvent
from .clock import Clock
from .db import Store, queries

log = logging.getLogger("ewg.alerts")

CURSOR = "alerts_cursor"
FEED_BATCH = 500
ITEMS_PER_ALERT = 50  # an alert names at most this many items; the message gives the full count


class AlertWatch:
    def __init__(self, store: Store, alerter: Alerter, clock: Clock, host: str, owner: str) -> None:
        self.store = store
        self.alerter = alerter
        self.clock = clock
        self.host = host
        self.owner = owner

    def prime(self) -> None:
        """On a database that never had alerts, start the feed now: history is not news."""
        if self.alerter.enabled and self.store.read_cursor(CURSOR) is None:
            self.store.advance_cursor(CURSOR, None, queries.last_event_id(self.store), self.clock.now())

    def tick(self) -> int:
        """Send the alerts for the feed since the cursor, if this engine wins it; returns how many."""
        if not self.alerter.enabled:
            return 0
        cursor = self.store.read_cursor(CURSOR)
        if cursor is None:
            self.prime()
            return 0
        rows = queries.alert_feed(self.store, after_id=cursor, limit=FEED_BATCH)
        if not rows or not self.store.advance_cursor(CURSOR, cursor, rows[-1]["id"], self.clock.now()):
            return 0
        sent = 0
        for alert in self.alerts_from(rows):
            sent += self.alerter.notify(alert)
        return sent

    def engine_stopped(self, why: str) -> None:
        self.alerter.notify(
            Alert(
                event=AlertEvent.ENGINE_STOP,
                message=f"engine {self.owner} stopped: {why}",
                host=self.host,
                at=self.clock.now(),
                suggestion="If nobody stopped it on purpose, start it again (`ewg run`) and check `ewg doctor`.",
            )
        )

    def alerts_from(self, rows: Iterable[dict]) -> list[Alert]:
        now = self.clock.now()
        failed: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
        stuck: dict[str, list[str]] = defaultdict(list)
        alerts: list[Alert] = []
        for row in rows:
            verb = row["verb"]
            if verb == "attempt_failed" and row.get("item_status") == "failed":
                key = (row["item_kind"] or "item", row["selection"], row["item_error_class"] or "")
                failed[key].append(row)
            elif verb == "verdict" and row["result"] in ("STALLED", "TIMED OUT"):
                stuck[row["result"]].extend(row["affected"])
            elif verb == "resource_pause":
                alerts.append(
                    Alert(
                        event=AlertEvent.RESOURCE_PAUSE,
                        message=f"claiming paused: {row['reason']}",
                        host=self.host,
                        at=row["at"],
                        suggestion="Free space or memory; claiming resumes by itself when it returns.",
                    )
                )
            elif verb == "early_warning":
                alerts.append(
                    Alert(
                        event=AlertEvent.EARLY_WARNING,
                        message=row["reason"],
                        host=self.host,
                        at=row["at"],
                        suggestion=row["result"],
                    )
                )
            elif verb == "service_down":
                alerts.append(
                    Alert(
                        event=AlertEvent.SERVICE_DOWN,
                        message=f"service {row['selection']} is down: {row['result']}",
                        host=self.host,
                        at=row["at"],
                        error_class="transient",
                        suggestion=f"Start {row['selection']} again; its stages wait as blocked, spending no attempt.",
                    )
                )
        for (kind, stage, cls), group in failed.items():
            ids = sorted({i for r in group for i in r["affected"]})
            first = group[0]
            alerts.append(
                Alert(
                    event=AlertEvent.NEEDS_OPERATOR,
                    message=f"{len(ids)} {kind}(s) failed at {stage} ({cls or 'unclassified'}): {first['reason']}",
                    host=self.host,
                    at=now,
                    items=tuple(ids[:ITEMS_PER_ALERT]),
                    error_class=cls or None,
                    suggestion=first.get("item_suggestion") or "See `ewg failures`, then retry or skip.",
                )
            )
        for verdict, ids in stuck.items():
            unique = sorted(set(ids))
            alerts.append(
                Alert(
                    event=AlertEvent.STUCK,
                    message=f"{len(unique)} item(s) {verdict}",
                    host=self.host,
                    at=now,
                    items=tuple(unique[:ITEMS_PER_ALERT]),
                    suggestion="Open `ewg` and press the intervene key, or `ewg extend ID SECONDS` / `ewg stop ID`.",
                )
            )
        return alerts
