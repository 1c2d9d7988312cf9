"""One write transaction, and the named write operations that run inside it.

Each area keeps its operations in a mixin of its own (work: claims, completions, attempts and
rescues; operator: the verbs' select, plan and apply; upkeep: switches, health, services, engines,
intake and retention), so the engine's batching survives: the dispatcher claims and completes in
one unit of work, a verb plans and applies in one.
"""

from __future__ import annotations

from typing import Any

from .dialect import Dialect
from .operator import OperatorOps
from .upkeep import UpkeepOps
from .work import WorkOps


class Unit(WorkOps, OperatorOps, UpkeepOps):
    """A transaction the driver opened; commits when the `with` block ends, rolls back on an error."""

    def __init__(self, conn: Any, dialect: Dialect) -> None:
        self._conn = conn
        self.dialect = dialect

    def execute(self, sql: str, params: Any = ()) -> Any:
        """Run one statement of the repository's SQL (written with `?` placeholders) in this unit."""
        return self._conn.execute(self.dialect.sql(sql), params)

    def notify(self, what: str) -> None:
        """Wake the other hosts when this unit commits ("work": something became ready, "verb": an
        operator changed items or switches). PostgreSQL delivers it at commit, never on a rollback;
        on one host there is nobody to wake."""
        if self.dialect.notify:
            self.execute(self.dialect.notify, (what,))

    def executemany(self, sql: str, rows: Any) -> Any:
        """One statement for many parameter rows (seeding, bulk inserts)."""
        return self._conn.executemany(self.dialect.sql(sql), rows)
