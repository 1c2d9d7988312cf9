"""What a database driver's exception means, for code that must not know the drivers.

engine.errors classifies a failure (busy and unreachable are transient, full is a resource), the
CLI tells damage from a permission from a lost server, and neither imports sqlite3 or psycopg:
only the repository does (pyproject.toml's import-linter contract).
"""

from __future__ import annotations

import sqlite3
import sys

BUSY, FULL, LOST, READ_ONLY = "busy", "full", "lost", "read-only"


def driver_errors() -> tuple[type[BaseException], ...]:
    """Every driver's base exception class (psycopg's only once something loaded it)."""
    found: list[type[BaseException]] = [sqlite3.Error]
    pg = sys.modules.get("psycopg")
    if pg is not None:
        found.append(pg.Error)
    return tuple(found)


def fault(exc: BaseException) -> str | None:
    """BUSY, FULL, LOST (the server went away or cannot be reached), READ_ONLY, or None."""
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError):
        if "locked" in text or "busy" in text:
            return BUSY
        if "full" in text:
            return FULL
        if "readonly" in text:
            return READ_ONLY
        return None
    pg = sys.modules.get("psycopg")
    if pg is None or not isinstance(exc, pg.Error):
        return None
    if isinstance(exc, pg.errors.DiskFull | pg.errors.OutOfMemory):
        return FULL
    if isinstance(exc, pg.errors.ReadOnlySqlTransaction):
        return READ_ONLY
    if isinstance(
        exc, pg.errors.LockNotAvailable | pg.errors.SerializationFailure | pg.errors.DeadlockDetected
    ):
        return BUSY
    if isinstance(exc, pg.OperationalError):
        return LOST
    return None
