"""Configuration and workspace opening: every mistake is one clear message, exit 2 or 3, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine import config
from engine.config import ConfigError
from engine.db import DatabaseError
from engine.demo import demo_config
from engine.workspace import DEFAULT_TOML, init_workspace, open_workspace


def test_default_file_is_the_defaults():
    assert config.parse(DEFAULT_TOML) == config.Config()
    assert config.parse(demo_config()).demo.faults


@pytest.mark.parametrize(
    "text, must_name",
    [
        ("[retry]\nmax_attemps = 3\n", "[retry] max_attemps: unknown key"),
        ("[retry]\nmax_attempts = 'three'\n", "[retry] max_attempts"),
        ("[timeouts]\nepisode_processing = -5\n", "[timeouts] episode_processing"),
        ("[stages.episode.transcribed]\nkind = 'command'\n", "needs command"),
        (
            "[stages.episode.transcribed]\nkind = 'command'\ncommand = ['no-such-program-xyz']\n",
            "no-such-program-xyz",
        ),
        ("[stages.episode.translated]\nkind = 'demo'\n", "unknown stage"),
        ("[retry]\nbase_delay = 30\nmax_delay = 10\n", "max_delay must be at least base_delay"),
        ("[engine]\nheartbeat_interval = 5\ndead_after = 2\n", "dead_after"),
        ("[retry\n", "not valid TOML"),
        ("[stages.episode.enriched]\nservices = ['llm']\n", "[services.llm]"),
        ("[recovery]\nmanual_intervention_required = ['oops']\n", "unknown error class"),
    ],
)
def test_bad_config_names_the_key(text, must_name):
    with pytest.raises(ConfigError) as err:
        config.parse(text)
    assert must_name in str(err.value)


def test_cli_bad_config_exits_2_without_traceback(tmp_path):
    init_workspace(tmp_path).close()
    (tmp_path / "ewg.toml").write_text("[retry]\nmax_attempts = -1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", "--workspace", str(tmp_path), "status"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "[retry] max_attempts" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_database_is_never_recreated(tmp_path):
    init_workspace(tmp_path).close()
    (tmp_path / "ewg.db").unlink()
    with pytest.raises(DatabaseError, match="never recreated"):
        open_workspace(tmp_path)
    assert not (tmp_path / "ewg.db").exists()
    proc = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", "-w", str(tmp_path), "status"], capture_output=True, text=True
    )
    assert proc.returncode == 3 and "Traceback" not in proc.stderr


def test_corrupt_database_is_refused(tmp_path):
    init_workspace(tmp_path).close()
    (tmp_path / "ewg.db").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(DatabaseError, match="not an SQLite database"):
        open_workspace(tmp_path)


def test_newer_schema_is_refused(tmp_path):
    ws = init_workspace(tmp_path)
    ws.store.connection().execute("PRAGMA user_version=99")
    ws.close()
    with pytest.raises(DatabaseError, match="newer than this ewg knows"):
        open_workspace(tmp_path)


def test_not_a_workspace(tmp_path):
    with pytest.raises(ConfigError, match="ewg init"):
        open_workspace(tmp_path)


def test_init_refuses_to_overwrite(tmp_path):
    init_workspace(tmp_path).close()
    with pytest.raises(ConfigError, match="already holds a workspace"):
        init_workspace(tmp_path)


def test_database_is_owner_only(tmp_path):
    init_workspace(tmp_path).close()
    assert (tmp_path / "ewg.db").stat().st_mode & 0o077 == 0


def test_engine_never_imports_textual():
    code = (
        "import sys, pkgutil, importlib, engine\n"
        "for m in pkgutil.walk_packages(engine.__path__, 'engine.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m == 'textual' or m.startswith('textual.') or m.startswith('ewg_tui')]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_import_linter_contract_holds():
    import shutil
    from pathlib import Path

    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    proc = subprocess.run([exe], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_an_older_schema_is_backed_up_then_migrated(tmp_path):
    from engine.db import SCHEMA_VERSION

    ws = init_workspace(tmp_path)
    conn = ws.store.connection()
    conn.execute("DROP INDEX ix_items_counts")  # what a version-1 database lacks
    conn.execute("PRAGMA user_version=1")
    ws.close()
    ws = open_workspace(tmp_path)
    assert ws.store.schema_version() == SCHEMA_VERSION
    assert ws.store.read_one("SELECT name FROM sqlite_master WHERE name='ix_items_counts'") is not None
    backups = list((tmp_path / "backups").glob("ewg-*-pre-migration-v1.db"))
    assert len(backups) == 1 and backups[0].stat().st_mode & 0o077 == 0
    ws.close()


def test_version_3_keeps_only_indexes_that_queries_read(tmp_path):
    """The hot path rewrites every index whose column it sets; v3 drops those no query reads."""
    ws = init_workspace(tmp_path)
    conn = ws.store.connection()
    conn.execute("DROP INDEX ix_items_stuck")
    for col in ("updated_at", "error_class", "verdict"):  # what a version-2 database has
        conn.execute(f"CREATE INDEX ix_items_kind_{col} ON items (kind, {col}, id)")
    conn.execute("CREATE INDEX ix_attempts_item_id ON attempts (item_id)")
    conn.execute("PRAGMA user_version=2")
    ws.close()
    ws = open_workspace(tmp_path)
    names = {r[0] for r in ws.store.read("SELECT name FROM sqlite_master WHERE type='index'")}
    assert not names & {
        "ix_items_kind_updated_at",
        "ix_items_kind_error_class",
        "ix_items_kind_verdict",
        "ix_attempts_item_id",
    }
    assert {"ix_items_stuck", "ix_items_counts", "ix_items_kind_status", "ix_attempts_item"} <= names
    # version 7 indexes show, title and stage again, for the console's sort (not written by claims)
    assert {"ix_items_kind_show", "ix_items_kind_title", "ix_items_kind_stage"} <= names
    plan = " ".join(
        str(tuple(r))
        for r in ws.store.read(
            "EXPLAIN QUERY PLAN SELECT id FROM items WHERE kind='episode' AND verdict IS NOT NULL ORDER BY id"
        )
    )
    assert "ix_items_stuck" in plan  # the stuck filter reads the partial index
    ws.close()


def test_deep_windows_page_over_ids(tmp_path):
    from engine.db import queries

    ws = init_workspace(tmp_path)
    with ws.store.write() as conn:
        conn.executemany(
            "INSERT INTO items (id, kind, status, next_stage, next_attempt_at) VALUES (?,?,?,?,0)",
            [
                (f"ep{n:06d}", "episode", "failed" if n % 3 == 0 else "queued", "transcribed")
                for n in range(3000)
            ],
        )
    flt = queries.ItemFilter(statuses=("failed",))
    rows = queries.item_window(ws.store, flt, offset=900, limit=5)
    assert [r["id"] for r in rows] == [f"ep{n:06d}" for n in range(2700, 2715, 3)]
    back = queries.item_window(ws.store, flt, sort="id", descending=True, offset=0, limit=2)
    assert [r["id"] for r in back] == ["ep002997", "ep002994"]
    plan = " ".join(
        r[3]
        for r in ws.store.read(
            "EXPLAIN QUERY PLAN SELECT id FROM items WHERE kind='episode' ORDER BY id LIMIT 10 OFFSET 100"
        )
    )
    assert "TEMP B-TREE" not in plan  # no sort of the whole table per window
    ws.close()


def test_an_unfiltered_window_pages_on_the_covering_index_until_something_is_discarded(tmp_path):
    """`status <> 'discarded'` reads the row behind every index entry a deep window skips (48 ms at
    100k against 4 ms): with nothing discarded it is left out, and the rows are the same either way."""
    from engine.db import queries

    ws = init_workspace(tmp_path)
    with ws.store.write() as conn:
        conn.executemany(
            "INSERT INTO items (id, kind, status, next_stage, next_attempt_at) VALUES (?,?,?,?,0)",
            [(f"ep{n:04d}", "episode", "queued", "transcribed") for n in range(500)],
        )
    statements: list[str] = []
    ws.store.connection().set_trace_callback(statements.append)
    flt = queries.ItemFilter()
    assert queries.count_items(ws.store, flt) == 500
    rows = queries.item_window(ws.store, flt, offset=400, limit=3)
    assert [r["id"] for r in rows] == ["ep0400", "ep0401", "ep0402"]
    assert not [s for s in statements if "<> 'discarded'" in s]
    with ws.store.write() as conn:
        conn.execute("UPDATE items SET status='discarded' WHERE id IN ('ep0000', 'ep0401')")
    statements.clear()
    assert queries.count_items(ws.store, flt) == 498
    rows = queries.item_window(ws.store, flt, offset=399, limit=3)
    assert [r["id"] for r in rows] == ["ep0400", "ep0402", "ep0403"]
    assert [s for s in statements if "<> 'discarded'" in s]  # hidden again once there is one
    shown = queries.ItemFilter(show_discarded=True)
    assert queries.count_items(ws.store, shown) == 500
    assert queries.count_items(ws.store, queries.ItemFilter(statuses=("discarded",))) == 2
    ws.store.connection().set_trace_callback(None)
    ws.close()


def test_a_free_text_window_is_the_same_whether_it_walks_the_index_or_scans(tmp_path):
    from engine.db import queries

    ws = init_workspace(tmp_path)
    with ws.store.write() as conn:
        conn.executemany(
            "INSERT INTO items (id, kind, title, status, next_stage, next_attempt_at) VALUES (?,?,?,?,?,0)",
            [
                (
                    f"ep{n:04d}",
                    "episode",
                    "budget vote" if n % 10 == 0 else "weather",
                    "queued",
                    "transcribed",
                )
                for n in range(500)
            ],
        )
    flt = queries.ItemFilter(text="budget")
    total = queries.count_items(ws.store, flt)
    assert total == 50
    expected = [f"ep{n:04d}" for n in range(100, 150, 10)]
    for matches in (None, total, 10_000):  # unknown, sparse (a scan), dense (an index walk)
        rows = queries.item_window(ws.store, flt, offset=10, limit=5, matches=matches)
        assert [r["id"] for r in rows] == expected
        assert queries.item_window(ws.store, flt, offset=80, limit=5, matches=matches) == []
    descending = queries.item_window(ws.store, flt, descending=True, offset=0, limit=2, matches=10_000)
    assert [r["id"] for r in descending] == ["ep0490", "ep0480"]
    ws.close()


def test_file_operations_is_the_probes_timeout_unless_the_stage_sets_its_own():
    from engine.config import parse

    cfg = parse("[timeouts]\nfile_operations = 42.0\n")
    assert cfg.timeout_for("episode", "discovered") == 42.0  # the built-in probe only reads the file
    assert cfg.timeout_for("episode", "transcribed") == cfg.timeouts.episode_processing
    assert cfg.timeout_for("clip", "generated") == cfg.timeouts.clip_generation
    own = parse('[stages.episode.discovered]\nkind = "builtin"\ntimeout = 7.0\n')
    assert own.timeout_for("episode", "discovered") == 7.0
    demo = parse('[stages.episode.discovered]\nkind = "demo"\n')
    assert demo.timeout_for("episode", "discovered") == demo.timeouts.episode_processing
