"""The upkeep operations (engine/db/upkeep.py), on SQLite and on a real PostgreSQL, and the SQLite
file inspection (engine/db/sqlite_file.py).

State is seeded through the operations themselves where one exists; rows no upkeep operation
writes (attempts, events, engines, leases, checkpoints) are seeded with portable SQL in a unit.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from engine.db import SCHEMA_VERSION, SQLiteStore, Store, sqlite_file, upkeep
from engine.db.upkeep import HealthSample, NewEpisode

SOURCE = Path(upkeep.__file__).read_text()


@pytest.fixture
def store(any_workspace):
    """A new database on each driver (the workspace fixture closes it)."""
    return any_workspace().store


@pytest.fixture
def sqlite_store(tmp_path):
    s = SQLiteStore.create(tmp_path / "ewg.db")
    yield s
    s.close()


def _episode(item_id: str, next_stage: str | None = "discovered", **kw) -> NewEpisode:
    fields = {"source": f"/media/{item_id}.mp4", "show": "Show", "title": item_id, "stage": None}
    fields.update(kw)
    return NewEpisode(item_id, next_stage=next_stage, target_stage="published", **fields)


def _add(store: Store, *ids: str, now: float = 100.0, **kw) -> None:
    with store.write() as unit:
        for item_id in ids:
            assert unit.insert_episode(_episode(item_id, **kw), now=now)


def _row(store: Store, item_id: str) -> dict:
    row = store.read_one("SELECT * FROM items WHERE id=?", (item_id,))
    return dict(row) if row is not None else {}


# -- the SQL itself -------------------------------------------------------------------------------
def test_the_shared_sql_uses_none_of_the_sqlite_only_forms():
    for banned in (
        r"INSERT OR",
        r"PRAGMA",
        r"INDEXED BY",
        r"json_extract",
        r"json_each",
        r"GLOB",
        r"\browid\b",
    ):
        assert not re.search(banned, SOURCE, re.IGNORECASE), banned
    assert "lastrowid" not in SOURCE and "?1" not in SOURCE
    assert "sqlite3" not in SOURCE  # the driver's module is the driver's


# -- health samples and blocked waits --------------------------------------------------------------
def test_a_health_sample_is_stored_and_older_samples_go(store):
    with store.write() as unit:
        unit.record_health_sample(HealthSample(10.0, 5.0, 40.0, 900.0, 800.0, None), keep_after=0.0)
        unit.record_health_sample(HealthSample(20.0, 6.0, 41.0, 890.0, 790.0, 3600.0), keep_after=15.0)
    rows = [dict(r) for r in store.read("SELECT at, cpu_percent, time_to_full_s FROM health")]
    assert rows == [{"at": 20.0, "cpu_percent": 6.0, "time_to_full_s": 3600.0}]


def test_requeue_blocked_by_reason_prefix_takes_the_prefix_literally(store):
    _add(store, "a", "b", "c", "d")
    with store.write() as unit:
        unit.block_waiting([("episode", "discovered")], reason="service llm_a is down (HTTP 500)", now=1.0)
    with store.write() as unit:  # re-block two with other reasons
        unit.execute("UPDATE items SET blocked_reason=? WHERE id='b'", ("service llmXa is down (x)",))
        unit.execute("UPDATE items SET blocked_reason=? WHERE id='c'", ("resource: disk full",))
    with store.write() as unit:
        moved = unit.requeue_blocked(now=5.0, reason_prefix="service llm_a ", matching=True)
    assert moved == 2  # a and d; "llmXa" is not "llm_a"
    assert {i: _row(store, i)["status"] for i in "abcd"} == {
        "a": "queued",
        "b": "blocked",
        "c": "blocked",
        "d": "queued",
    }
    assert _row(store, "a")["blocked_reason"] is None and _row(store, "a")["next_attempt_at"] == 5.0
    with store.write() as unit:  # the resource is back: every wait but a service's ends
        assert unit.requeue_blocked(now=6.0, reason_prefix="service ", matching=False) == 1
    assert _row(store, "c")["status"] == "queued" and _row(store, "b")["status"] == "blocked"


def test_block_waiting_holds_only_queued_or_retrying_items_of_the_stages_named(store):
    _add(store, "q", "r", "other")
    _add(store, "done", next_stage=None)
    with store.write() as unit:
        unit.execute("UPDATE items SET status='retrying' WHERE id='r'")
        unit.execute("UPDATE items SET next_stage='transcribed' WHERE id='other'")
        assert unit.block_waiting([], reason="x", now=1.0) == 0
        assert (
            unit.block_waiting([("episode", "discovered"), ("clip", "discovered")], reason="svc", now=2.0)
            == 2
        )
    assert [_row(store, i)["status"] for i in ("q", "r", "other", "done")] == [
        "blocked",
        "blocked",
        "queued",
        "done",
    ]
    assert _row(store, "q")["blocked_reason"] == "svc"


# -- switches and services -------------------------------------------------------------------------
def test_update_switch_writes_only_a_new_value_and_says_how_it_turned(store):
    with store.write() as unit:
        first = unit.update_switch(
            "resource_pause", "disk 10 MB", reason="disk 10 MB", actor="engine", now=1.0
        )
    assert (first.before, first.after, first.changed, first.turned) == ("", "disk 10 MB", True, True)
    with store.write() as unit:
        same = unit.update_switch(
            "resource_pause", "disk 10 MB", reason="disk 10 MB", actor="engine", now=2.0
        )
    assert not same.changed and not same.turned
    assert upkeep.latest_switch(store, "resource_pause").at == 1.0  # not rewritten
    with store.write() as unit:
        figures = unit.update_switch(
            "resource_pause", "disk 9 MB", reason="disk 9 MB", actor="engine", now=3.0
        )
    assert figures.changed and not figures.turned
    with store.write() as unit:
        cleared = unit.update_switch("resource_pause", "", reason="", actor="engine", now=4.0)
    assert cleared.turned and cleared.before == "disk 9 MB"
    switch = upkeep.latest_switch(store, "resource_pause")
    assert (switch.value, switch.actor, switch.at) == ("", "engine", 4.0)
    assert upkeep.latest_switch(store, "never-set") is None


def test_a_service_record_moves_since_only_when_it_goes_up_or_down(store):
    def since():
        return dict(store.read_one("SELECT ok, message, checked_at, since FROM services WHERE name='llm'"))

    with store.write() as unit:
        unit.record_service("llm", ok=True, message="HTTP 200", now=1.0)
    with store.write() as unit:
        unit.record_service("llm", ok=True, message="HTTP 200", now=2.0)
    assert since() == {"ok": 1, "message": "HTTP 200", "checked_at": 2.0, "since": 1.0}
    with store.write() as unit:
        unit.record_service("llm", ok=False, message="unreachable", now=3.0)
    with store.write() as unit:
        unit.record_service("llm", ok=False, message="unreachable", now=4.0)
    assert since() == {"ok": 0, "message": "unreachable", "checked_at": 4.0, "since": 3.0}


# -- intake ------------------------------------------------------------------------------------------
def test_insert_episode_inserts_once_and_back_fills_only_a_missing_fingerprint(store):
    with store.write() as unit:
        assert unit.insert_episode(_episode("ep1"), now=7.0)
        assert not unit.insert_episode(_episode("ep1", source="/elsewhere.mp4", fingerprint="f1"), now=8.0)
    row = _row(store, "ep1")
    assert (row["kind"], row["status"], row["next_stage"], row["source"]) == (
        "episode",
        "queued",
        "discovered",
        "/media/ep1.mp4",
    )
    assert (row["fingerprint"], row["created_at"], row["next_attempt_at"]) == ("f1", 7.0, 7.0)
    with store.write() as unit:
        assert not unit.insert_episode(_episode("ep1", fingerprint="f2"), now=9.0)
    assert _row(store, "ep1")["fingerprint"] == "f1"  # a fingerprint is never replaced
    with store.write() as unit:
        assert unit.insert_episode(_episode("finished", next_stage=None, stage="published"), now=1.0)
    assert _row(store, "finished")["status"] == "done"


def test_repoint_source_moves_only_from_the_source_read(store):
    _add(store, "ep1")
    with store.write() as unit:
        assert not unit.repoint_source("ep1", old="/not/what/it/says.mp4", new="/new.mp4", now=2.0)
        assert unit.repoint_source("ep1", old="/media/ep1.mp4", new="/new.mp4", now=3.0)
    assert (_row(store, "ep1")["source"], _row(store, "ep1")["updated_at"]) == ("/new.mp4", 3.0)


def test_intake_reads(store):
    _add(store, "old", now=1.0, fingerprint="same")
    _add(store, "new", now=2.0, fingerprint="same")
    ids = [f"ep{n:04d}" for n in range(1200)]  # more than one IN (...) chunk
    _add(store, *ids)
    with store.write() as unit:
        unit.execute("UPDATE items SET kind='clip' WHERE id='ep0007'")
    assert upkeep.episode_with_content(store, "same") == "old"
    assert upkeep.episode_with_content(store, "other") is None
    assert upkeep.item_exists(store, "new") and not upkeep.item_exists(store, "nope")
    assert upkeep.item_ids(store) == {"old", "new", *ids}
    sources = upkeep.episode_sources(store, [*ids, "missing", "ep0001"])
    assert len(sources) == 1199 and "ep0007" not in sources and sources["ep1199"] == "/media/ep1199.mp4"


# -- retention ---------------------------------------------------------------------------------------
def _seed_history(store: Store) -> None:
    _add(store, "a", "b")
    with store.write() as unit:
        for item_id in ("a", "b"):
            for n in range(1, 5):  # ended at 10, 20, 30, 40; b's last one still running
                ended = None if (item_id, n) == ("b", 4) else 10.0 * n
                unit.execute(
                    "INSERT INTO attempts (item_id, stage, number, worker, lease_token, started_at, ended_at)"
                    " VALUES (?,?,?,?,?,?,?)",
                    (item_id, "discovered", n, "w", n, 1.0, ended),
                )
        for at, actor in ((5.0, "engine"), (6.0, "watchdog"), (7.0, "alice"), (50.0, "engine")):
            unit.execute("INSERT INTO events (at, actor, verb) VALUES (?,?,?)", (at, actor, "x"))
        for at in (5.0, 50.0):
            unit.record_health_sample(HealthSample(at, 1.0, 1.0, 1.0, 1.0), keep_after=0.0)


def test_prune_counts_then_deletes_the_same_history(store):
    _seed_history(store)
    what = {"cutoff": 35.0, "keep_attempts_per_item": 2, "actors": ("engine", "watchdog")}
    counted = upkeep.count_prunable(store, **what)
    # a keeps attempts 3 and 4, loses 1 and 2; b keeps 3 and 4 (running), loses 1 and 2
    assert counted == upkeep.PruneCounts(attempts=4, events=2, health=1)
    with store.write() as unit:
        assert unit.prune_history(**what) == counted
    kept = {(r["item_id"], r["number"]) for r in store.read("SELECT item_id, number FROM attempts")}
    assert kept == {("a", 3), ("a", 4), ("b", 3), ("b", 4)}
    assert {r["actor"] for r in store.read("SELECT actor FROM events")} == {"alice", "engine"}
    assert upkeep.count_prunable(store, **what) == upkeep.PruneCounts()


# -- engines, leases, places and checkpoints (doctor's reads) ----------------------------------------
def test_engine_records(store):
    with store.write() as unit:
        for owner, state in (("h:2:1", "stopped"), ("h:1:1", "running"), ("g:3:1", "stopping")):
            unit.execute(
                "INSERT INTO engines (owner, host, pid, started_at, heartbeat_at, workers, state)"
                " VALUES (?,?,?,?,?,?,?)",
                (owner, owner.split(":")[0], int(owner.split(":")[1]), 1.0, 2.0, 2, state),
            )
    assert [e.owner for e in upkeep.engines(store)] == ["g:3:1", "h:1:1", "h:2:1"]
    running = upkeep.engines(store, running_only=True)
    assert running == [
        upkeep.EngineRecord("g:3:1", "g", 3, "stopping", 2.0),
        upkeep.EngineRecord("h:1:1", "h", 1, "running", 2.0),
    ]


def test_held_leases_and_item_places(store):
    _add(store, "run", "wait")
    _add(store, "done", next_stage=None, stage="published")
    with store.write() as unit:
        unit.execute(
            "UPDATE items SET status='running', lease_owner='h:1:1', lease_token=4, lease_expires_at=30.0,"
            " heartbeat_at=20.0, rescues=1 WHERE id='run'"
        )
    assert upkeep.held_leases(store) == [upkeep.HeldLease("run", "h:1:1", 4, 30.0, 20.0, 1, "discovered")]
    assert [p.id for p in upkeep.item_places(store)] == ["done", "run", "wait"]
    unfinished = upkeep.item_places(store, unfinished_only=True)
    assert [(p.id, p.status, p.lease_owner, p.created_at) for p in unfinished] == [
        ("run", "running", "h:1:1", 100.0),
        ("wait", "queued", "", 100.0),
    ]


def test_checkpoint_records(store):
    _add(store, "ep1", "ep2")
    with store.write() as unit:
        for item_id, stage, manifest, at, stale in (
            ("ep1", "discovered", '{"files": ["é"]}', 1.0, False),
            ("ep1", "transcribed", "{}", 2.0, True),
            ("ep2", "discovered", "{}", 3.0, False),
        ):
            unit.execute(
                "INSERT INTO checkpoints (item_id, stage, manifest, created_at, stale) VALUES (?,?,?,?,?)",
                (item_id, stage, manifest, at, stale),
            )
    records = upkeep.checkpoint_records(store)
    assert [(r.item_id, r.stage, r.stale, r.created_at) for r in records] == [
        ("ep1", "discovered", False, 1.0),
        ("ep1", "transcribed", True, 2.0),
        ("ep2", "discovered", False, 3.0),
    ]
    assert records[0].manifest == '{"files": ["é"]}'.encode()
    assert [r.stage for r in upkeep.checkpoint_records(store, item_id="ep1", live_only=True)] == [
        "discovered"
    ]


def test_a_manifest_that_is_not_utf8_still_reads_as_its_bytes(sqlite_store):
    """SQLite only: its driver raises on such text, and PostgreSQL cannot hold it."""
    store = sqlite_store
    _add(store, "ep1")
    with store.write() as unit:
        unit.execute(
            "INSERT INTO checkpoints (item_id, stage, manifest, created_at, stale)"
            " VALUES ('ep1', 'discovered', CAST(X'7B22FF227D' AS TEXT), 1.0, FALSE)"
        )
    with pytest.raises(sqlite3.OperationalError):  # what doctor hit before it read bytes
        store.read("SELECT manifest FROM checkpoints")
    assert [r.manifest for r in upkeep.checkpoint_records(store)] == [b'{"\xff"}']


def test_adopt_outputs_is_a_compare_and_swap_on_the_place_read(store):
    _add(store, "ep1")
    with store.write() as unit:
        unit.execute(
            "UPDATE items SET stage='discovered', next_stage='transcribed', attempts=2,"
            " error_class='transient' WHERE id='ep1'"
        )
        unit.execute(
            "INSERT INTO checkpoints (item_id, stage, manifest, created_at, stale)"
            " VALUES ('ep1', 'transcribed', '{\"old\": 1}', 1.0, TRUE)"
        )
    with store.write() as unit:
        place = unit.lock_item_place("ep1")
        assert place == upkeep.ItemPlace("ep1", "episode", "discovered", "queued", "transcribed")
        assert unit.lock_item_place("nope") is None
        adopt = {
            "manifests": {"transcribed": '{"files": []}', "edited": '{"files": [1]}'},
            "stage": "edited",
            "next_stage": "rendered",
            "status": "queued",
            "now": 9.0,
        }
        assert not unit.adopt_outputs("ep1", expect_stage=None, expect_status="queued", **adopt)
        assert not unit.adopt_outputs("ep1", expect_stage="discovered", expect_status="running", **adopt)
        assert not store.read("SELECT 1 FROM checkpoints WHERE stale = FALSE")  # nothing written
        assert unit.adopt_outputs("ep1", expect_stage="discovered", expect_status="queued", **adopt)
    row = _row(store, "ep1")
    assert (row["stage"], row["next_stage"], row["status"], row["attempts"], row["error_class"]) == (
        "edited",
        "rendered",
        "queued",
        0,
        None,
    )
    records = {r.stage: r for r in upkeep.checkpoint_records(store, item_id="ep1")}
    assert records["transcribed"].manifest == b'{"files": []}' and not records["transcribed"].stale
    assert records["edited"].created_at == 9.0


def test_starts_with_escapes_the_like_wildcards():
    assert upkeep.starts_with("service a_b%c\\ ") == "service a\\_b\\%c\\\\ %"


# -- the SQLite file ----------------------------------------------------------------------------------
def test_inspect_reads_an_intact_database_without_changing_it(tmp_path):
    folder = tmp_path / "odd #name? here"  # '#' and '?' would end a URI's path unquoted
    store = SQLiteStore.create(folder / "ewg.db")
    _add(store, "ep1", "ep2")
    identity = store.identity()
    store.close()
    before = (folder / "ewg.db").read_bytes()
    found = sqlite_file.inspect(folder / "ewg.db", count_items=True)
    assert (found.schema_version, found.integrity, found.items, found.identity) == (
        SCHEMA_VERSION,
        ("ok",),
        2,
        identity,
    )
    assert found.is_database and found.intact and found.problem == ""
    assert sqlite_file.inspect(folder / "ewg.db").items is None  # counted only when asked
    assert (folder / "ewg.db").read_bytes() == before
    assert not sqlite_file.inspect(tmp_path / "nothing.db").is_database
    assert not (tmp_path / "nothing.db").exists()  # never created


def test_inspect_says_what_is_wrong_with_a_file_that_is_not_a_database(tmp_path):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    foreign = tmp_path / "foreign.db"
    foreign.write_bytes(b"PK\x03\x04 not sqlite at all")
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(sqlite_file.SQLITE_HEADER + b"\x00" * 84 + b"\xff" * 400)
    found = {p.name: sqlite_file.inspect(p) for p in (empty, foreign, damaged, tmp_path / "missing.db")}
    assert found["empty.db"].empty and not found["empty.db"].is_database
    assert found["foreign.db"].foreign_header and "not an SQLite file" in found["foreign.db"].problem
    assert found["damaged.db"].damaged and found["damaged.db"].problem == found["damaged.db"].damaged
    assert "No such file" in found["missing.db"].unreadable


def test_inspect_of_a_database_without_an_ewg_schema(tmp_path):
    plain = tmp_path / "plain.db"
    conn = sqlite3.connect(plain)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    found = sqlite_file.inspect(plain, count_items=True)
    assert (found.schema_version, found.intact, found.items, found.identity) == (0, True, None, None)
