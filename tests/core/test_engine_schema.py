"""The frozen migrations build the schema that engine/models.py declares."""

from __future__ import annotations

import sqlite3

from sqlmodel import SQLModel

from engine import models  # noqa: F401  (registers the tables)
from engine.db import SCHEMA_VERSION, SQLiteStore


def _columns(conn: sqlite3.Connection) -> dict[str, set[str]]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {t: {r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')} for t in tables}


def test_migrated_schema_matches_the_models(tmp_path):
    store = SQLiteStore.create(tmp_path / "ewg.db")
    try:
        assert store.schema_version() == SCHEMA_VERSION
        actual = _columns(store.connection())
    finally:
        store.close()
    declared = {t.name: {c.name for c in t.columns} for t in SQLModel.metadata.sorted_tables}
    assert actual == declared


def test_every_database_gets_its_own_identity(tmp_path):
    a, b = SQLiteStore.create(tmp_path / "a.db"), SQLiteStore.create(tmp_path / "b.db")
    try:
        assert len(a.identity()) == 32 and a.identity() != b.identity()
    finally:
        a.close()
        b.close()


def test_migration_steps_can_be_rerun(tmp_path):
    store = SQLiteStore.create(tmp_path / "ewg.db")
    try:
        identity = store.identity()
        store.connection().execute("PRAGMA user_version=4")
        store.migrate()
        assert store.schema_version() == SCHEMA_VERSION and store.identity() == identity
    finally:
        store.close()
