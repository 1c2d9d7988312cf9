"""The repository: every SQL statement ewg runs, behind named operations.

A driver (one per database: SQLite embedded, PostgreSQL for many hosts) owns the connections, the
transactions, the migrations and the SQL that differs between the two. A write transaction is a
`Unit` whose methods are the named write operations (engine/db/work.py, operator.py, upkeep.py);
the read side is engine/db/queries.py. Orchestration (runtime, verbs, watchdog, health, doctor)
keeps policy only and never writes SQL (docs/ARCHITECTURE.md, "The database").
"""

from __future__ import annotations

from .base import Store
from .sqlite import SCHEMA_VERSION, Reader, SQLiteStore, check_access, check_regular_file
from .types import (
    CLAIMABLE,
    ITEM_COLUMNS,
    Claim,
    Completion,
    DatabaseError,
    DatabasePathError,
    Readable,
    ReadInterrupted,
)

__all__ = [
    "CLAIMABLE",
    "ITEM_COLUMNS",
    "SCHEMA_VERSION",
    "Claim",
    "Completion",
    "DatabaseError",
    "DatabasePathError",
    "ReadInterrupted",
    "Readable",
    "Reader",
    "SQLiteStore",
    "Store",
    "check_access",
    "check_regular_file",
]
