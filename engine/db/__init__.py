"""The repository: every SQL statement ewg runs, behind named operations.

A driver (one per database: SQLite embedded, PostgreSQL for many hosts) owns the connections, the
transactions, the migrations and the SQL that differs between the two. A write transaction is a
`Unit` whose methods are the named write operations (engine/db/work.py, operator.py, upkeep.py);
the read side is engine/db/queries.py. Orchestration (runtime, verbs, watchdog, health, doctor)
keeps policy only and never writes SQL (docs/ARCHITECTURE.md, "The database").
"""
