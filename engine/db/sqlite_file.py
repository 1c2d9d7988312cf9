"""Inspect an SQLite database file without changing it: header, schema version, integrity, identity.

`ewg doctor` judges a workspace's database and its backups from what this reads; it never opens
them through a Store, which would switch the file to WAL mode, create `-wal`/`-shm` beside it or
migrate it. Everything here is SQLite's own (the file header, `PRAGMA user_version`,
`PRAGMA integrity_check`, a read-only URI connection); the PostgreSQL driver answers the same
questions about its server in its own way.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from .sqlite import SQLITE_HEADER, read_header

INTEGRITY_LINES = 20  # damage reports past this many lines say nothing more that helps


@dataclass(frozen=True)
class FileInspection:
    """What one SQLite file holds, as far as it could be read.

    The first of these that is set says why the rest is missing: `unreadable` (the file cannot be
    read: its errno text), `empty` or `foreign_header` (not an SQLite file), `damaged` (SQLite could
    not read it as a database: its error text)."""

    path: Path
    unreadable: str = ""
    empty: bool = False
    foreign_header: bool = False
    damaged: str = ""
    schema_version: int | None = None  # PRAGMA user_version: 0 holds no ewg schema
    integrity: tuple[str, ...] = field(default_factory=tuple)  # ("ok",) when intact
    items: int | None = None  # counted when asked, on an intact file with a schema
    identity: str | None = None  # the workspace identity (schema 5 on), on an intact file

    @property
    def is_database(self) -> bool:
        """SQLite could read it (its schema version is known)."""
        return self.schema_version is not None

    @property
    def intact(self) -> bool:
        return self.integrity == ("ok",)

    @property
    def problem(self) -> str:
        """The first thing wrong with it, in a few words ("" when it is an intact database)."""
        if self.unreadable:
            return self.unreadable
        if self.empty or self.foreign_header:
            return "not an SQLite file (damaged or cut short)"
        if self.damaged:
            return self.damaged
        return "" if self.intact else (self.integrity[0] if self.integrity else "not checked")


def _read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection: it never creates the database, switches its journal mode or migrates it
    (SQLite may still open `-wal`/`-shm` beside a WAL database to read it). The path is quoted for the
    URI, where a `?` or `#` in a folder name would end it."""
    conn = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    return conn


def inspect(path: Path, *, count_items: bool = False) -> FileInspection:
    """Read `path`'s header, schema version, integrity (and its items, when asked) read-only."""
    path = Path(path)
    try:
        header = read_header(path)  # never open-and-close: that would drop this process's SQLite locks
    except OSError as exc:
        return FileInspection(path, unreadable=str(exc))
    if header != SQLITE_HEADER:
        return FileInspection(path, empty=not header, foreign_header=bool(header))
    try:
        conn = _read_only(path)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            integrity = tuple(
                str(r[0]) for r in conn.execute(f"PRAGMA integrity_check({INTEGRITY_LINES})").fetchall()
            )
            items = identity = None
            if integrity == ("ok",) and version:
                if count_items:
                    items = int(conn.execute("SELECT COUNT(*) FROM items").fetchone()[0])
                has_table = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type='table' AND name='workspace'"
                ).fetchone()
                if has_table:
                    row = conn.execute("SELECT value FROM workspace WHERE key='identity'").fetchone()
                    identity = None if row is None else str(row[0])
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return FileInspection(path, damaged=str(exc))
    except OSError as exc:
        return FileInspection(path, unreadable=str(exc))
    return FileInspection(path, schema_version=version, integrity=integrity, items=items, identity=identity)
