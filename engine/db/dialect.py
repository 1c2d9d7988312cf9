"""What differs between the databases in the repository's shared SQL, in one place.

The named operations are written once in the SQL both engines accept (`?` placeholders,
TRUE/FALSE, ON CONFLICT, RETURNING); a dialect rewrites the placeholders for its driver and
supplies the few clauses only one engine has (row locks, index hints, SKIP LOCKED).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    name: str
    for_update: str = ""  # appended to a SELECT whose rows the unit will change
    skip_locked: str = ""  # ... and to the claim's, so hosts never wait on each other's rows
    ready_index: str = ""  # the claim's index hint (SQLite's planner needs it at 100k rows)
    # A text column read as bytes, so a value that is not UTF-8 reaches Python (SQLite's driver raises
    # on it as text; PostgreSQL cannot hold one, so it only converts).
    text_bytes: str = "CAST({} AS BLOB)"
    scan_items: str = ""  # after `FROM items` in a free-text read: scan the table, walk no index
    # `column` matches a LIKE pattern (`?`, escaped with \\) whatever the case of ASCII letters
    nocase_like: str = "LOWER({column}) LIKE LOWER(?) ESCAPE '\\'"
    notify: str = ""  # a statement that wakes the other hosts when the unit commits (none on one host)

    def sql(self, text: str) -> str:
        return text


# `?` outside quoted literals and identifiers; the shared SQL never holds a literal `%`.
_PLACEHOLDER = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*")|\?""")


@functools.lru_cache(maxsize=4096)
def _to_format(text: str) -> str:
    return _PLACEHOLDER.sub(lambda m: m.group(1) or "%s", text)


@dataclass(frozen=True)
class PostgresDialect(Dialect):
    def sql(self, text: str) -> str:
        return _to_format(text)


SQLITE = Dialect(
    "sqlite",
    ready_index=" INDEXED BY ix_items_ready",
    scan_items=" NOT INDEXED",
    # SQLite's LIKE already ignores ASCII case (and its LOWER folds nothing else), so LOWER() on both
    # sides answers the same and only doubles a free-text scan of 100k items (26 ms -> 59 ms).
    nocase_like="{column} LIKE ? ESCAPE '\\'",
)
POSTGRESQL = PostgresDialect(
    "postgresql",
    for_update=" FOR UPDATE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    text_bytes="convert_to({}, 'UTF8')",
    notify="SELECT pg_notify('ewg', ?)",
)


def is_url(spec: str) -> bool:
    """A database spec that names a PostgreSQL server (anything else is an SQLite file path)."""
    return spec.startswith(("postgresql://", "postgres://"))
