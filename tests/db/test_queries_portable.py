"""Every read of engine/db/queries.py answers the same on SQLite and on a real PostgreSQL.

One seeded database per driver (engine/db/sqlite.py, engine/db/postgres.py with its own
migrations), seeded through the same portable SQL; each test states what the read must answer, on
both. PostgreSQL runs on the server EWG_TEST_PG_URL names (`.ci/run` starts one), in a database
made for this module and dropped after it. The data is chosen to catch what differs between the
two engines: ids and titles whose order depends on collation, NULLs in sorted columns, LIKE's case
and its `%`/`_`, CAST(float AS INTEGER) (SQLite truncates, PostgreSQL rounds), booleans, and rows
returned without an ORDER BY.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

import pytest
from ewgtest import pg_database

from engine.db import SQLiteStore, queries, upkeep, work

NOW = 1_800_000_000.0  # a minute boundary

# -- the seed, in the SQL both databases accept ---------------------------------------------------
_ITEMS = [  # every other column keeps its default
    dict(id="ep_a", show="Tech_Talk", title="Budget vote", stage=None, next_stage="discovered"),
    dict(
        id="epXa",
        show="tech talk",
        title="apple",
        stage="discovered",
        next_stage="transcribed",
        status="failed",
        attempts=3,
        error_class="transient",
        error_message="HTTP 503 at 50% of epXa",
        error_at=NOW - 100,
        error_suggestion="retry later",
        source="/src/epXa.mp4",
    ),
    dict(
        id="EP_A",
        show="News",
        title="Banana",
        stage="transcribed",
        next_stage="enriched",
        status="running",
        attempts=1,
        verdict="STALLED",
        lease_owner="hostb:7:w0",
        lease_token=4,
        started_at=NOW - 30,
        progress=0.5,
    ),
    dict(id="ep_d", show="News", title="cherry", stage="rendered", next_stage=None, status="done", attempts=2)
    | dict(progress=1.0, lease_token=2),
    dict(
        id="ep_e", show="News", title="old", stage="discovered", next_stage="transcribed", status="discarded"
    ),
    dict(
        id="ep_f",
        show="Data Night",
        title="Zebra",
        stage="discovered",
        next_stage="transcribed",
        status="failed",
        attempts=1,
        error_class="transient",
        error_message="HTTP 503 at 75% of ep_f",
        error_at=NOW - 50,
        source="/src/ep_f.mp4",
    ),
    dict(id="EP_A-c1", kind="clip", parent_id="EP_A", show="News", title="clip one", stage="generated")
    | dict(next_stage="rendered"),
    dict(id="EP_A-c2", kind="clip", parent_id="EP_A", show="News", title="clip two", stage=None)
    | dict(next_stage="discovered"),
]
_ATTEMPTS = [  # ids 1..8 in this order; minute = floor((ended - (NOW - 3540)) / 60) for per_minute
    # item, stage, number, worker, token, started, ended, outcome, class, duration, spent
    (
        "epXa",
        "transcribed",
        1,
        "hosta:1:w0",
        1,
        NOW - 400,
        NOW - 380,
        "failed",
        "transient",
        20.0,
        True,
    ),  # 52.67
    (
        "epXa",
        "transcribed",
        2,
        "hosta:1:w1",
        2,
        NOW - 300,
        NOW - 290,
        "failed",
        "transient",
        10.0,
        True,
    ),  # 54.17
    (
        "epXa",
        "transcribed",
        3,
        "hosta:1:w0",
        3,
        NOW - 110,
        NOW - 100,
        "failed",
        "transient",
        10.0,
        True,
    ),  # 57.33
    ("ep_d", "rendered", 1, "hostb:7:w1", 1, NOW - 260, NOW - 250, "timed_out", None, 10.0, True),  # 54.83
    ("ep_d", "rendered", 2, "hostb:7:w1", 2, NOW - 200, NOW - 180, "succeeded", None, 20.0, True),  # 56.0
    ("EP_A", "transcribed", 1, "hostb:7:w0", 2, NOW - 500, NOW - 490, "dead", None, 10.0, False),  # 50.83
    ("EP_A", "transcribed", 1, "hostb:7:w0", 3, NOW - 480, NOW - 470, "succeeded", None, 10.0, True),  # 51.17
    (
        "ep_f",
        "transcribed",
        1,
        "hosta:1:w1",
        1,
        NOW - 60,
        NOW - 50,
        "failed",
        "transient",
        10.0,
        True,
    ),  # 58.17
]
_EVENTS = [  # ids 1..11 in this order
    (NOW - 600, "pause", "", "maint", []),
    (NOW - 540, "unpause", "", "", []),
    (NOW - 320, "retry", "", "", ["epXa", "ep_d"]),
    (NOW - 250, "attempt_failed", "", "", ["ep_d"]),
    (NOW - 220, "reset", "", "", ["ep_d", "ep_f"]),
    (NOW - 120, "service_down", "llm", "connection refused", []),
    (NOW - 100, "attempt_failed", "", "", ["epXa"]),
    (NOW - 60, "resource_pause", "", "disk low", []),
    (NOW - 10, "skip", "", "", ["EP_A"]),
    (NOW - 8, "annotate", "", "", ["epxa"]),  # "epXa" but for its case
    (NOW - 5, "annotate", "", "", ["ep_a"]),
]
_MB = 2**20


def _seed(unit) -> None:
    for item in _ITEMS:
        row = {"kind": "episode", "status": "queued", **item}
        unit.execute(
            f"INSERT INTO items ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())
        )
    unit.executemany(
        "INSERT INTO attempts (item_id, stage, number, worker, lease_token, started_at, ended_at, outcome,"
        " error_class, duration, spent) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        _ATTEMPTS,
    )
    unit.executemany(
        "INSERT INTO events (at, actor, verb, selection, reason, affected) VALUES (?, 'op', ?, ?, ?, ?)",
        [
            (at, verb, selection, reason, json.dumps(affected))
            for at, verb, selection, reason, affected in _EVENTS
        ],
    )
    unit.executemany(
        "INSERT INTO checkpoints (item_id, stage, manifest, created_at, stale) VALUES (?,?,?,?,?)",
        [
            ("ep_d", "discovered", json.dumps({"files": [{"path": "a", "size": _MB}]}), NOW - 900, False),
            ("ep_d", "rendered", json.dumps({"files": [{"path": "b", "size": 2 * _MB}]}), NOW - 180, True),
            ("epXa", "discovered", json.dumps({"files": [{"path": "c", "size": 3 * _MB}]}), NOW - 420, False),
            ("ep_f", "discovered", json.dumps({"files": [{"path": "d", "size": 10 * _MB}]}), NOW - 70, True),
        ],
    )
    unit.executemany(
        "INSERT INTO engine_state (key, value, reason, actor, at) VALUES (?,?,?,?,?)",
        [
            ("paused", "1", "maint", "op", NOW - 600),
            ("resource_pause", "disk low", "", "", NOW - 60),
            ("db_busy", "", "", "", NOW - 30),
            ("warnings", json.dumps([{"what": "disk"}]), "", "", NOW - 20),
        ],
    )
    unit.executemany(
        "INSERT INTO engines (owner, host, pid, started_at, heartbeat_at, workers, busy, state, executions)"
        " VALUES (?,?,?,?,?,?,?,?,?)",
        [
            ("hostb:7", "hostb", 7, NOW - 900, NOW - 5, 2, 2, "running", 5),
            ("hostd:3", "hostd", 3, NOW - 900, NOW - 1, 2, 0, "stopped", 0),
            ("hosta:1", "hosta", 1, NOW - 1000, NOW - 2, 2, 1, "running", 10),
            ("hostc:9", "hostc", 9, NOW - 900, NOW - 100, 2, 0, "running", 0),  # its heartbeat is stale
        ],
    )
    unit.executemany(
        "INSERT INTO services (name, ok, message, checked_at, since) VALUES (?,?,?,?,?)",
        [
            ("llm", False, "connection refused", NOW - 10, NOW - 120),
            ("ffmpeg", True, "", NOW - 10, NOW - 1000),
        ],
    )
    unit.executemany(
        "INSERT INTO health (at, cpu_percent, memory_percent, disk_free_mb, db_disk_free_mb, time_to_full_s)"
        " VALUES (?,?,?,?,?,?)",
        [
            (NOW - 1900, 5.0, 40.0, 1200.0, 2200.0, None),
            (NOW - 1700, 7.0, 50.0, 1100.0, 2100.0, 9000.0),
            (NOW - 20, 10.0, 60.0, 1000.0, 2000.0, None),
        ],
    )


@pytest.fixture(scope="module")
def pg_database_url():
    """A database of this module's own on the EWG_TEST_PG_URL server (ewgtest.pg_database)."""
    with pg_database() as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db(request, tmp_path_factory):
    """The driver's Store, migrated to its newest schema and seeded."""
    if request.param == "sqlite":
        store = SQLiteStore.create(tmp_path_factory.mktemp("portable") / "ewg.db")
    else:
        from engine.db.postgres import PostgresStore

        store = PostgresStore.create(request.getfixturevalue("pg_database_url"))
    try:
        with store.write() as unit:
            _seed(unit)
        yield store
    finally:
        store.close()


F = queries.ItemFilter


def _ids(rows) -> list[str]:
    return [r["id"] for r in rows]


# -- the console's list: filters, sorts, windows --------------------------------------------------
@pytest.mark.parametrize(
    "flt, expected",
    [
        (F(), ["EP_A", "epXa", "ep_a", "ep_d", "ep_f"]),  # binary order: E < e, X < _
        (F(statuses=("failed",)), ["epXa", "ep_f"]),
        (F(statuses=("discarded",)), ["ep_e"]),
        (F(show_discarded=True), ["EP_A", "epXa", "ep_a", "ep_d", "ep_e", "ep_f"]),
        (F(stage="transcribed"), ["EP_A", "epXa", "ep_f"]),  # done there, or next
        (F(show="tech"), ["epXa", "ep_a"]),  # case-insensitive
        (F(show="h_t"), ["ep_a"]),  # `_` is itself, not any character ("tech talk")
        (F(text="budget"), ["ep_a"]),
        (F(text="BUDGET"), ["ep_a"]),
        (F(text="50%"), ["epXa"]),  # `%` is itself ("503" is in both messages)
        (F(text="_a"), ["EP_A", "ep_a"]),
        (F(text="e"), ["EP_A", "epXa", "ep_a", "ep_d", "ep_f"]),
        (F(stuck_only=True), ["EP_A"]),
        (F(ids=("ep_d", "ep_a")), ["ep_a", "ep_d"]),
        (F(kind="clip", parent_id="EP_A"), ["EP_A-c1", "EP_A-c2"]),
        (F(kind="clip", parent_id="ep_a"), []),
    ],
)
def test_filters_count_and_list_the_same_items(db, flt, expected):
    assert queries.count_items(db, flt) == len(expected)
    assert _ids(queries.item_window(db, flt)) == expected
    if flt.text:  # the dense plan (an index walk) and the sparse one (a scan) agree
        for matches in (len(expected), 10_000):
            assert _ids(queries.item_window(db, flt, matches=matches)) == expected
        # ... and the console's first look, before the count: the same rows, and here the count too
        rows, total = queries.text_window_head(db, flt, limit=10)
        assert (_ids(rows), total) == (expected, len(expected))


@pytest.mark.parametrize("probe, cap", [(1, 100), (100, 100), (1, 3), (1, 1)])
@pytest.mark.parametrize("sort, descending", [("id", False), ("id", True), ("title", False), ("stage", True)])
def test_a_free_text_head_is_the_first_window_whichever_look_finds_it(
    db, monkeypatch, probe, cap, sort, descending
):
    """The first look reads `probe` rows in order, the second keeps `cap` matches: whichever answers,
    the rows are the first window's, and a count comes only when every match was seen."""
    monkeypatch.setattr(queries, "TEXT_PROBE", probe)
    monkeypatch.setattr(queries, "TEXT_CAP", cap)
    flt = F(text="e")  # five matches
    expected = _ids(queries.item_window(db, flt, sort, descending))
    for limit in (1, 2, 5, 10):
        rows, total = queries.text_window_head(db, flt, sort, descending, limit)
        assert _ids(rows) == expected[:limit]
        assert total in (None, 5)
        kept = max(cap, limit)  # what the scan keeps: a window is never cut short by the cap
        if kept <= 5:
            assert total is None  # the scan stopped at what it keeps: it cannot have counted
        elif sort != "id":
            assert total == 5  # no first look in the id order: the scan saw every match


@pytest.mark.parametrize(
    "sort, descending, expected",
    [
        ("id", True, ["ep_f", "ep_d", "ep_a", "epXa", "EP_A"]),
        (
            "title",
            False,
            ["EP_A", "ep_a", "ep_f", "epXa", "ep_d"],
        ),  # Banana, Budget vote, Zebra, apple, cherry
        (
            "show",
            False,
            ["ep_f", "EP_A", "ep_d", "ep_a", "epXa"],
        ),  # Data Night, News x2, Tech_Talk, tech talk
        ("stage", False, ["ep_a", "epXa", "ep_f", "ep_d", "EP_A"]),  # NULL first ascending
        ("stage", True, ["EP_A", "ep_d", "ep_f", "epXa", "ep_a"]),  # ... and last descending
        ("verdict", False, ["epXa", "ep_a", "ep_d", "ep_f", "EP_A"]),
        ("started_at", True, ["EP_A", "ep_f", "ep_d", "ep_a", "epXa"]),
        ("progress", True, ["ep_d", "EP_A", "ep_f", "ep_a", "epXa"]),
        ("attempts", False, ["ep_a", "EP_A", "ep_f", "ep_d", "epXa"]),
        ("error_class", False, ["EP_A", "ep_a", "ep_d", "epXa", "ep_f"]),
        ("parent_id", True, ["ep_f", "ep_d", "ep_a", "epXa", "EP_A"]),
    ],
)
def test_sorts_order_nulls_and_text_the_same(db, sort, descending, expected):
    assert _ids(queries.item_window(db, F(), sort, descending)) == expected
    assert _ids(queries.item_window(db, F(), sort, descending, offset=1, limit=2)) == expected[1:3]


def test_an_unknown_sort_is_refused(db):
    with pytest.raises(ValueError, match="cannot sort by 'bogus'"):
        queries.item_window(db, F(), "bogus")


def test_a_window_reads_every_column_the_console_shows(db):
    (row,) = queries.item_window(db, F(ids=("EP_A",)))
    assert tuple(row) == queries.ITEM_FIELDS
    assert (row["verdict"], row["lease_owner"], row["started_at"], row["progress"]) == (
        "STALLED",
        "hostb:7:w0",
        NOW - 30,
        0.5,
    )


def test_the_consoles_own_reader_reads_the_same(db):
    """The console polls through `store.reader()`, a connection of its own: same SQL, same answers."""
    reader = db.reader()
    try:
        for flt in (F(text="_a"), F(show="TECH"), F(stage="transcribed")):
            assert _ids(queries.item_window(reader, flt)) == _ids(queries.item_window(db, flt))
            assert queries.count_items(reader, flt) == queries.count_items(db, flt)
        assert queries.overview(reader, NOW) == queries.overview(db, NOW)
    finally:
        if hasattr(reader, "close"):  # PostgreSQL's reader has a connection the store does not track
            reader.close()


def test_contains_escapes_like_wildcards():
    assert queries.contains("50%_\\x") == "%50\\%\\_\\\\x%"


# -- one item ---------------------------------------------------------------------------------------
def test_item_and_its_checkpoints(db):
    assert queries.item(db, "nope") is None
    item = queries.item(db, "epXa")
    assert (item["status"], item["error_class"], item["attempts"], item["clip_start"]) == (
        "failed",
        "transient",
        3,
        None,
    )
    checkpoints = queries.item_checkpoints(db, "ep_d")
    assert [(c["stage"], c["stale"], c["bytes"], c["skipped"]) for c in checkpoints] == [
        ("discovered", False, _MB, False),
        ("rendered", True, 2 * _MB, False),
    ]
    assert all(type(c["stale"]) is bool for c in checkpoints)


def test_attempts_end_with_the_running_one_read_from_its_lease(db):
    rows = queries.attempts(db, "EP_A")
    assert [(r["id"], r["stage"], r["number"], r["lease_token"], r["outcome"], r["spent"]) for r in rows] == [
        (6, "transcribed", 1, 2, "dead", False),
        (7, "transcribed", 1, 3, "succeeded", True),
        (None, "enriched", 2, 4, None, True),
    ]
    assert rows[-1]["worker"] == "hostb:7:w0" and rows[-1]["started_at"] == NOW - 30
    assert all(type(r["spent"]) is bool for r in rows)
    assert [r["id"] for r in queries.attempts(db, "epXa")] == [1, 2, 3]
    assert queries.attempts(db, "ep_a") == []


def test_events_of_an_item_match_its_id_exactly(db):
    assert [e["id"] for e in queries.events(db)] == list(range(11, 0, -1))
    assert [e["id"] for e in queries.events(db, limit=3)] == [11, 10, 9]
    assert [e["id"] for e in queries.events(db, since_id=9)] == [11, 10]
    assert [e["id"] for e in queries.events(db, "epXa")] == [7, 3]  # not "epxa" (10)
    assert [e["id"] for e in queries.events(db, "epXa", limit=1)] == [7]
    assert [e["id"] for e in queries.events(db, "ep_a")] == [11]  # not "EP_A" (9), nor "epXa" for `_`
    assert [e["id"] for e in queries.events(db, "EP_A")] == [9]
    first = queries.events(db, "ep_d")[-1]
    assert (first["verb"], first["affected"], first["before"], first["after"]) == (
        "retry",
        ["epXa", "ep_d"],
        {},
        {},
    )


# -- `ewg status`, failures, counts -----------------------------------------------------------------
def test_status_lists_episodes_then_clips_in_id_order(db):
    doc = queries.status(db)
    assert _ids(doc["episodes"]) == ["EP_A", "epXa", "ep_a", "ep_d", "ep_f"]
    assert _ids(doc["clips"]) == ["EP_A-c1", "EP_A-c2"]
    assert "ep_e" in _ids(queries.status(db, include_discarded=True)["episodes"])
    assert doc["counts"] == queries.counts(db)


def test_counts_per_kind_status_and_stage(db):
    counts = queries.counts(db)
    episodes, clips = counts["episode"], counts["clip"]
    assert (episodes["total"], episodes["discarded"], clips["total"], clips["discarded"]) == (5, 1, 2, 0)
    assert episodes["by_status"] == {
        "queued": 1,
        "running": 1,
        "retrying": 0,
        "blocked": 0,
        "failed": 2,
        "stopped": 0,
        "done": 1,
    }

    def stage(done, in_flight=0, failed=0, waiting=0):
        return {"done": done, "in_flight": in_flight, "failed": failed, "waiting": waiting}

    assert episodes["by_stage"] == {
        "discovered": stage(4, waiting=1),
        "transcribed": stage(2, failed=2),
        "enriched": stage(1, in_flight=1),
        "editorial": stage(1),
        "rendered": stage(1),
    }
    assert clips["by_stage"] == {
        "discovered": stage(1, waiting=1),
        "generated": stage(1),
        "rendered": stage(0, waiting=1),
    }


def test_failure_groups(db):
    (group,) = queries.failure_groups(db)
    assert group["fingerprint"] == "transcribed|transient|HTTP <n> at <n>% of <source>"
    assert (group["count"], group["ids"], group["first_seen"], group["last_seen"]) == (
        2,
        ["epXa", "ep_f"],
        NOW - 100,
        NOW - 50,
    )
    assert (group["stage"], group["kind"], group["suggestion"]) == ("transcribed", "episode", "retry later")


def test_shows(db):
    assert queries.shows(db) == ("Data Night", "News", "Tech_Talk", "tech talk")
    assert queries.shows(db, "clip") == ("News",)
    assert queries.shows(db, limit=2) == ("Data Night", "News")


# -- the header, alerts, forecasts ------------------------------------------------------------------
def test_overview(db):
    ov = queries.overview(db, NOW)
    assert [e["owner"] for e in ov.engines] == ["hosta:1", "hostb:7"]
    assert ov.paused == {"value": "1", "reason": "maint", "actor": "op", "at": NOW - 600}
    assert ov.resource_pause == "disk low"
    assert [(s["name"], s["ok"]) for s in ov.services] == [("ffmpeg", True), ("llm", False)]
    assert all(type(s["ok"]) is bool for s in ov.services)
    assert [h["at"] for h in ov.health] == [NOW - 1900, NOW - 1700, NOW - 20]
    assert queries.overview(db, NOW - 160).executions_per_minute == 1  # ep_d's render ended at NOW - 180
    assert (ov.executions_per_minute, ov.stuck, ov.db_busy_at) == (0, 1, NOW - 30)
    assert ov.warnings == queries.early_warnings(db) == [{"what": "disk"}]


def test_alert_feed(db):
    assert queries.last_event_id(db) == 11
    feed = queries.alert_feed(db, 0)
    assert [(e["id"], e["verb"]) for e in feed] == [
        (4, "attempt_failed"),
        (6, "service_down"),
        (7, "attempt_failed"),
        (8, "resource_pause"),
    ]
    states = {
        e["id"]: (e["item_kind"], e["item_status"], e["item_error_class"], e["item_suggestion"])
        for e in feed
        if "item_kind" in e
    }
    assert states == {
        4: ("episode", "done", None, None),
        7: ("episode", "failed", "transient", "retry later"),
    }
    assert [e["id"] for e in queries.alert_feed(db, 6)] == [7, 8]
    assert [e["id"] for e in queries.alert_feed(db, 0, limit=1)] == [4]


def test_forecast_history(db):
    h = queries.forecast_history(db, NOW - 3600)
    assert h.queued == {("episode", "discovered"): 1, ("clip", "rendered"): 1, ("clip", "discovered"): 1}
    assert h.output_mb == {("episode", "discovered"): 2.0}  # the stale 10 MB checkpoint is left out
    assert h.outcomes == {
        ("episode", "transcribed"): [True, True, True, False, True],  # "dead" is neither
        ("episode", "rendered"): [True, False],
    }
    assert h.durations == {
        ("episode", "rendered"): {"hostb": [20.0]},
        ("episode", "transcribed"): {"hostb": [10.0]},
    }
    assert h.service_downs == {"llm": 1}
    assert h.memory == [(NOW - 1700, 50.0), (NOW - 20, 60.0)]


# -- metrics, the time view, the cost of recovery ----------------------------------------------------
def test_per_minute_floors_every_minute(db):
    pm = queries.per_minute(db, NOW)
    assert pm.start == NOW - 3540

    def at(**marks):
        series = [0] * 60
        for minute, n in marks.items():
            series[int(minute[1:])] = n
        return series

    assert pm.completed == at(m51=1, m56=1)
    assert pm.failed == at(m52=1, m54=2, m57=1, m58=1)  # 52.67 and 54.83 are not rounded up
    assert pm.rescued == at(m50=1)
    assert pm.retries == at(m54=1, m56=1, m57=1)


def test_metrics(db):
    m = queries.metrics(db)
    assert (m["failures"], m["recovered"], m["recovery_success_rate"]) == (3, 1, pytest.approx(1 / 3))
    assert m["time_to_recovery_s"] == {"median": 70.0, "mean": 70.0, "max": 70.0}
    assert m["top_failure_points"] == [
        {"kind": "episode", "stage": "transcribed", "error_class": "transient", "count": 4},
        {"kind": "episode", "stage": "rendered", "error_class": "timed_out", "count": 1},
    ]
    assert m["action_effectiveness"] == queries.action_effectiveness(db)
    assert [
        (a["verb"], a["items"], a["succeeded"], a["failed_again"], a["pending"], a["refailure_rate"])
        for a in m["action_effectiveness"]
    ] == [
        ("reset", 2, 1, 1, 0, 0.5),
        ("retry", 2, 0, 2, 0, 1.0),
        ("skip", 1, 0, 0, 1, None),
    ]
    recent = queries.metrics(db, since=NOW - 200)
    assert (recent["failures"], recent["recovered"], recent["recovery_success_rate"]) == (2, 0, 0.0)
    assert [a["verb"] for a in queries.action_effectiveness(db, since=NOW - 200)] == ["skip"]
    assert queries.follow_up(db, "ep_d", NOW - 220) == "succeeded"
    assert queries.follow_up(db, "ep_d", NOW - 320) == "failed_again"
    assert queries.follow_up(db, "EP_A", NOW) == "pending"


def test_metrics_snapshot_whole_and_incremental(db):
    snap = queries.metrics_snapshot(db, NOW)
    assert (snap.after_id, snap.last_id, snap.engines, snap.paused, snap.resource_pause, snap.warnings) == (
        0,
        8,
        2,
        True,
        True,
        1,
    )
    assert snap.attempts == [
        {
            "kind": "episode",
            "stage": "rendered",
            "outcome": "succeeded",
            "error_class": "",
            "count": 1,
            "seconds": 20.0,
        },
        {
            "kind": "episode",
            "stage": "rendered",
            "outcome": "timed_out",
            "error_class": "",
            "count": 1,
            "seconds": 10.0,
        },
        {
            "kind": "episode",
            "stage": "transcribed",
            "outcome": "dead",
            "error_class": "",
            "count": 1,
            "seconds": 10.0,
        },
        {
            "kind": "episode",
            "stage": "transcribed",
            "outcome": "failed",
            "error_class": "transient",
            "count": 4,
            "seconds": 50.0,
        },
        {
            "kind": "episode",
            "stage": "transcribed",
            "outcome": "succeeded",
            "error_class": "",
            "count": 1,
            "seconds": 10.0,
        },
    ]
    assert snap.recoveries == [
        {
            "item_id": "epXa",
            "kind": "episode",
            "stage": "transcribed",
            "failed_at": NOW - 380,
            "recovered_at": None,
        },
        {
            "item_id": "ep_d",
            "kind": "episode",
            "stage": "rendered",
            "failed_at": NOW - 250,
            "recovered_at": NOW - 180,
        },
        {
            "item_id": "ep_f",
            "kind": "episode",
            "stage": "transcribed",
            "failed_at": NOW - 50,
            "recovered_at": None,
        },
    ]
    assert snap.items == [
        {"kind": "clip", "stage": "discovered", "status": "queued", "count": 1},
        {"kind": "clip", "stage": "rendered", "status": "queued", "count": 1},
        {"kind": "episode", "stage": "", "status": "done", "count": 1},  # NULL next stage first
        {"kind": "episode", "stage": "discovered", "status": "queued", "count": 1},
        {"kind": "episode", "stage": "enriched", "status": "running", "count": 1},
        {"kind": "episode", "stage": "transcribed", "status": "discarded", "count": 1},
        {"kind": "episode", "stage": "transcribed", "status": "failed", "count": 2},
    ]
    assert snap.health == {
        "at": NOW - 20,
        "cpu_percent": 10.0,
        "memory_percent": 60.0,
        "disk_free_mb": 1000.0,
        "db_disk_free_mb": 2000.0,
        "time_to_full_s": None,
    }
    assert snap.services == [
        {"name": "ffmpeg", "ok": True, "checked_at": NOW - 10},
        {"name": "llm", "ok": False, "checked_at": NOW - 10},
    ]
    later = queries.metrics_snapshot(db, NOW, after_id=5)
    assert [(a["outcome"], a["count"]) for a in later.attempts] == [
        ("dead", 1),
        ("failed", 1),
        ("succeeded", 1),
    ]
    assert [r["item_id"] for r in later.recoveries] == ["ep_f"]  # EP_A's success follows no failure


def test_recovery_cost(db):
    cost = queries.recovery_cost(db, None, NOW)
    assert cost["totals"] == {
        "runs": 8,
        "seconds": 100.0,
        "failed_runs": 5,
        "failed_seconds": 60.0,
        "retries": 3,
        "retry_seconds": 40.0,
        "rescues": 1,
        "rescue_seconds": 10.0,
        "wasted_share": pytest.approx(0.7),
    }
    assert [
        (s["stage"], s["runs"], s["failed_runs"], s["retries"], s["rescues"]) for s in cost["stages"]
    ] == [
        ("transcribed", 6, 4, 2, 1),
        ("rendered", 2, 1, 1, 0),
    ]
    assert [(c["stage"], c["error_class"], c["runs"], c["seconds"]) for c in cost["by_error_class"]] == [
        ("transcribed", "transient", 4, 50.0),
        ("transcribed", "dead", 1, 10.0),
        ("rendered", "timed_out", 1, 10.0),
    ]
    rate = 2 / (490 - 60)  # succeeded runs per second since the first attempt ended, while not paused
    assert cost["paused"] == {
        "seconds": 60.0,  # the resource pause still on; the operator's ended before the first attempt did
        "operator_seconds": 0.0,
        "resource_seconds": 60.0,
        "periods": 1,
        "runs_per_hour": pytest.approx(rate * 3600),
        "runs_lost": pytest.approx(rate * 60),
    }
    since = queries.recovery_cost(db, NOW - 550, NOW)["paused"]
    assert (since["operator_seconds"], since["resource_seconds"], since["periods"]) == (10.0, 60.0, 2)
    summary = queries.recovery_cost_summary(cost)
    assert summary.startswith("5 failed run(s) took 1 m 00 s, 3 retry run(s) took 40.0 s, 1 rescue(s)")
    assert "(70% of stage time); paused 1 m 00 s in 1 period(s)" in summary


# -- nothing is left unchecked, and SQLite keeps its plans -------------------------------------------
def test_every_read_is_checked_here():
    """Each function of engine/db/queries.py that reads (takes `store`) is called by this module."""
    reads = {
        name
        for name, fn in inspect.getmembers(queries, inspect.isfunction)
        if fn.__module__ == queries.__name__
        and not name.startswith("_")
        and next(iter(inspect.signature(fn).parameters), "") == "store"
    }
    source = Path(__file__).read_text(encoding="utf-8")
    called = {
        node.func.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "queries"
    }
    assert len(reads) > 20 and reads - called == set()


class _Recorder:
    """A Readable that keeps the statements it ran (SQLite's, for EXPLAIN QUERY PLAN)."""

    def __init__(self, store) -> None:
        self.store, self.statements = store, []

    def read(self, sql, params=()):
        self.statements.append((sql, tuple(params)))
        return self.store.read(sql, params)

    def read_one(self, sql, params=()):
        self.statements.append((sql, tuple(params)))
        return self.store.read_one(sql, params)


def _inner_plan(store, sql, params) -> list[str]:
    """The plan of the id subquery of an item window (what pages over the index)."""
    rows = [tuple(r) for r in store.read("EXPLAIN QUERY PLAN " + sql, params)]
    (subquery,) = [r[0] for r in rows if r[3].startswith("LIST SUBQUERY")]
    inner = {subquery}
    for node, parent, _, _ in rows:  # children come after their parent
        if parent in inner:
            inner.add(node)
    return [r[3] for r in rows if r[0] in inner - {subquery}]


@pytest.mark.parametrize(
    "sort, descending, index",
    [
        ("id", False, "ix_items_kind_id"),
        ("stage", False, "ix_items_kind_stage"),  # NULLS FIRST is its own order
        ("stage", True, "ix_items_kind_stage"),  # ... and NULLS LAST read backwards
        ("show", False, "ix_items_kind_show"),
        ("title", True, "ix_items_kind_title"),
    ],
)
def test_sqlite_windows_still_page_over_their_index(tmp_path, sort, descending, index):
    store = SQLiteStore.create(tmp_path / "ewg.db")
    try:
        recorder = _Recorder(store)
        queries.item_window(recorder, F(), sort, descending, offset=100, limit=10)
        plan = _inner_plan(store, *recorder.statements[-1])
        assert any(index in step for step in plan), plan
        assert not any("TEMP B-TREE" in step for step in plan), plan  # no sort of the whole list
    finally:
        store.close()


def test_sqlite_free_text_scans_the_table_and_matches_without_lower(tmp_path):
    store = SQLiteStore.create(tmp_path / "ewg.db")
    try:
        recorder = _Recorder(store)
        queries.count_items(recorder, F(text="budget", show="news"))
        sql, params = recorder.statements[-1]
        assert "LOWER(" not in sql and re.search(r"FROM items NOT INDEXED\b", sql)
        plan = [tuple(r)[3] for r in store.read("EXPLAIN QUERY PLAN " + sql, params)]
        assert plan == ["SCAN items"]
    finally:
        store.close()


def test_sqlite_reads_of_running_work_look_it_up_instead_of_scanning(tmp_path):
    """The watchdog reads every running item each second beside the console: with 100k items a
    scan of the table took ~3 ms of a core every pass; the (kind, status) index finds them."""
    store = SQLiteStore.create(tmp_path / "ewg.db")
    try:
        recorder = _Recorder(store)
        work.running_items(recorder)
        work.live_leases(recorder)
        upkeep.held_leases(recorder)
        queries.overview(recorder, 0.0)
        running = [(sql, p) for sql, p in recorder.statements if "status='running'" in sql]
        assert len(running) >= 4
        for sql, params in running:
            plan = [tuple(r)[3] for r in store.read("EXPLAIN QUERY PLAN " + sql, params)]
            assert not any(step.startswith("SCAN items") for step in plan), (sql, plan)
            assert any("ix_items_kind_status" in step for step in plan), (sql, plan)
    finally:
        store.close()


@pytest.mark.parametrize("probe", [1, 2, 100])
def test_a_narrowed_free_text_head_reads_from_where_the_wider_filter_began(db, monkeypatch, probe):
    """`start` is the first match of the filter the text extends: the first look reads from there,
    and finds what it would from the top (no match of the narrower text comes before it)."""
    monkeypatch.setattr(queries, "TEXT_PROBE", probe)
    wide = _ids(queries.item_window(db, F(text="e")))  # every episode: ids or titles with an e
    narrow = _ids(queries.item_window(db, F(text="et vote")))  # "Budget vote"
    assert narrow == ["ep_a"] and wide[0] == "EP_A"
    for start in (wide[0], "ep_a"):
        rows, total = queries.text_window_head(db, F(text="et vote"), limit=10, start=start)
        assert (_ids(rows), total) == (narrow, 1)
    # Given a later start than the truth, the first look shows it reads from there (EP_A is skipped);
    # when it cannot fill the window, the scan reads from the top.
    rows, _ = queries.text_window_head(db, F(text="e"), limit=2, start="epXa")
    assert _ids(rows) == (["epXa", "ep_a"] if probe >= 2 else ["EP_A", "epXa"])
