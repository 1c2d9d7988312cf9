"""Builds the console for tests: a seeded workspace on a fixed clock, every status represented.

The UI never writes the database; these fixtures do, to put the workspace into
the states the console must show (the engine would take minutes to get there).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from engine import errors
from engine.clock import FakeClock
from engine.demo import demo_config, seed_episodes
from engine.workspace import Workspace, init_workspace

NOW = 1_795_000_000.0
ENGINE_OWNER = "console-test-host:4242:1794999000"

EP = {
    n: ep
    for n, ep in enumerate(
        [
            "tech_talk_weekly_ep001_2026-11-29",
            "morning_brief_ep002_2026-11-29",
            "founders_hour_ep003_2026-11-29",
            "data_night_ep004_2026-11-29",
            "city_council_live_ep005_2026-11-29",
            "tech_talk_weekly_ep006_2026-11-29",
            "morning_brief_ep007_2026-11-29",
            "founders_hour_ep008_2026-11-29",
            "data_night_ep009_2026-11-29",
            "city_council_live_ep010_2026-11-29",
        ],
        start=1,
    )
}


def _set(conn, item_id: str, **values) -> None:
    sets = ", ".join(f"{k}=?" for k in values)
    conn.execute(f"UPDATE items SET {sets} WHERE id=?", (*values.values(), item_id))


def _attempt(
    conn,
    item_id: str,
    stage: str,
    number: int,
    outcome: str | None,
    start: float,
    duration: float | None,
    error_class: str | None = None,
    message: str | None = None,
    log: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO attempts (item_id, stage, number, worker, lease_token, started_at, ended_at, outcome,"
        " error_class, error_message, log_tail, duration, spent) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,1)",
        (
            item_id,
            stage,
            number,
            ENGINE_OWNER,
            number,
            start,
            None if duration is None else start + duration,
            outcome,
            error_class,
            message,
            log,
            duration,
        ),
    )


def _clip(conn, episode: str, n: int, **values) -> str:
    clip_id = f"{episode}__c{n:02d}"
    row = {
        "id": clip_id,
        "kind": "clip",
        "parent_id": episode,
        "source": "",
        "show": "",
        "title": f"clip {n}",
        "stage": "discovered",
        "next_stage": "generated",
        "target_stage": "rendered",
        "status": "queued",
        "next_attempt_at": NOW - 100,
        "created_at": NOW - 500,
        "updated_at": NOW - 50,
        "clip_start": 60.0 * n,
        "clip_end": 60.0 * n + 45,
        **values,
    }
    conn.execute(
        f"INSERT INTO items ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values())
    )
    return clip_id


def seed_states(ws: Workspace, with_engine_row: bool = True) -> None:
    """Ten episodes in every state the console shows, clips for the first, health samples and an engine.

    Running items have no attempt row, as in a live engine: their attempt is read from the lease."""
    with ws.store.write() as conn:
        _set(conn, EP[1], stage="rendered", next_stage=None, status="done", progress=1.0, attempts=0)
        _set(
            conn,
            EP[2],
            stage="transcribed",
            next_stage="enriched",
            status="running",
            progress=0.45,
            progress_message="enriching chapters 45%",
            started_at=NOW - 75,
            heartbeat_at=NOW - 1,
            progress_at=NOW - 2,
            lease_owner=ENGINE_OWNER,
            lease_token=3,
            lease_expires_at=NOW + 30,
        )
        _set(
            conn,
            EP[3],
            stage="discovered",
            next_stage="transcribed",
            status="retrying",
            attempts=1,
            next_attempt_at=NOW + 14,
            error_class=errors.TRANSIENT,
            error_at=NOW - 6,
            error_message="connection to transcription service timed out (demo)",
            error_suggestion=errors.SUGGESTIONS[errors.TRANSIENT],
        )
        _attempt(
            conn,
            EP[3],
            "transcribed",
            1,
            "failed",
            NOW - 40,
            34,
            errors.TRANSIENT,
            "connection to transcription service timed out (demo)",
            "transcribing 37%\nPOST /v1/transcribe -> timeout after 30 s",
        )
        _set(
            conn,
            EP[4],
            stage="enriched",
            next_stage="editorial",
            status="running",
            progress=0.2,
            progress_message="choosing highlights",
            started_at=NOW - 400,
            heartbeat_at=NOW - 1,
            progress_at=NOW - 310,
            verdict="STALLED",
            lease_owner=ENGINE_OWNER,
            lease_token=2,
            lease_expires_at=NOW + 30,
        )
        _set(
            conn,
            EP[5],
            stage="discovered",
            next_stage="transcribed",
            status="blocked",
            blocked_reason="service:llm is down (connection refused)",
        )
        _set(conn, EP[6], stage="transcribed", next_stage="enriched", status="stopped", progress=0.1)
        _set(
            conn,
            EP[7],
            stage=None,
            next_stage="discovered",
            status="failed",
            attempts=1,
            error_class=errors.PERSISTENT,
            error_at=NOW - 300,
            error_message="corrupt source: demo://Morning Brief/episode-007.mp4 has no readable video stream [demo]",
            error_suggestion=errors.SUGGESTIONS[errors.PERSISTENT],
        )
        _attempt(
            conn,
            EP[7],
            "discovered",
            1,
            "failed",
            NOW - 301,
            1.2,
            errors.PERSISTENT,
            "corrupt source",
            "probing demo://Morning Brief/episode-007.mp4\nerror: no video stream found",
        )
        _set(
            conn,
            EP[8],
            stage="transcribed",
            next_stage="enriched",
            status="failed",
            attempts=1,
            error_class=errors.MISSING_DEPENDENCY,
            error_at=NOW - 120,
            error_message="the enrichment model 'llama3' is not installed (demo)",
            error_suggestion=errors.SUGGESTIONS[errors.MISSING_DEPENDENCY],
        )
        _attempt(
            conn,
            EP[8],
            "enriched",
            1,
            "failed",
            NOW - 125,
            5,
            errors.MISSING_DEPENDENCY,
            "model not installed",
        )
        _set(conn, EP[10], stage="transcribed", next_stage="enriched", status="queued")
        for stage, at in (
            ("discovered", NOW - 900),
            ("transcribed", NOW - 800),
            ("enriched", NOW - 700),
            ("editorial", NOW - 600),
            ("rendered", NOW - 500),
        ):
            conn.execute(
                "INSERT INTO checkpoints (item_id, stage, manifest, created_at, stale) VALUES (?,?,?,?,0)",
                (
                    EP[1],
                    stage,
                    json.dumps({"files": [{"path": f"{stage}.json", "size": 2048, "sha256": "0"}]}),
                    at,
                ),
            )
        _clip(conn, EP[1], 1, stage="rendered", next_stage=None, status="done", progress=1.0)
        _clip(
            conn,
            EP[1],
            2,
            status="failed",
            attempts=3,
            error_class=errors.TRANSIENT,
            error_at=NOW - 30,
            error_message="render farm returned 503 (demo)",
        )
        _clip(
            conn,
            EP[1],
            3,
            stage="generated",
            next_stage="rendered",
            status="running",
            progress=0.6,
            started_at=NOW - 20,
            heartbeat_at=NOW - 1,
            progress_at=NOW - 1,
            lease_owner=ENGINE_OWNER,
        )
        for n in range(6):
            conn.execute(
                "INSERT INTO health (at, cpu_percent, memory_percent, disk_free_mb, db_disk_free_mb,"
                " time_to_full_s) VALUES (?,?,?,?,?,?)",
                (
                    NOW - 25 + n * 5,
                    20.0 + 12 * n,
                    41.0 + n,
                    52000.0 - 300 * n,
                    52000.0 - 300 * n,
                    36000.0 if n else None,
                ),
            )
        conn.execute(
            "INSERT INTO services (name, ok, message, checked_at, since) VALUES (?,?,?,?,?)",
            ("llm", 0, "connection refused", NOW - 3, NOW - 60),
        )
        if with_engine_row:
            conn.execute(
                "INSERT INTO engines (owner, host, pid, started_at, heartbeat_at, workers, busy, state,"
                " executions) VALUES (?,?,?,?,?,?,?,?,?)",
                (ENGINE_OWNER, "console-test-host", 4242, NOW - 1000, NOW - 1, 2, 2, "running", 40),
            )
        for n in range(7):
            conn.execute(
                "INSERT INTO attempts (item_id, stage, number, worker, lease_token, started_at, ended_at,"
                " outcome, duration, spent) VALUES (?,?,?,?,?,?,?,?,?,1)",
                (EP[9], "discovered", 1, ENGINE_OWNER, 1, NOW - 1000 + n, NOW - 30 + n, "succeeded", 1.0),
            )
        _set(conn, EP[9], status="queued")


def seeded_workspace(
    root: Path, clock: FakeClock | None = None, count: int = 10
) -> tuple[Workspace, FakeClock]:
    clock = clock or FakeClock(NOW - 1000)
    ws = init_workspace(root, demo_config(faults=False), clock=clock)
    seed_episodes(ws, count)
    seed_states(ws)
    clock.advance(NOW - clock.now())
    return ws, clock


def fixed_root(name: str) -> Path:
    """A workspace path that is the same on every run, so snapshots (which show it) are stable."""
    root = Path(tempfile.gettempdir()) / "ewg-console-snapshots" / name
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    return root
