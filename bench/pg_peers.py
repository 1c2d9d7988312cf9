"""The peers of `engine_throughput.py --backend postgresql`: procrastinate and pgqueuer running the
same chained work (N episodes x 5 no-op stages, each stage's job enqueues the next) on the same
PostgreSQL server, one worker process each, timed from worker start to the last execution.

Both keep at-least-once the way they do by default: procrastinate marks a job done in its own
transaction after it ran (a "doing" row survives a crash); pgqueuer deletes or logs a job after
its entrypoint returned. The next stage is enqueued inside the entrypoint, before the job is
acknowledged, as ewg commits the next stage with the completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import timedelta

STAGES = 5


async def _procrastinate(url: str, episodes: int, concurrency: int) -> float:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
    total = episodes * STAGES
    done = 0
    finished = asyncio.Event()

    @app.task(name="stage", queue="bench")
    async def stage(ep: int, n: int) -> None:
        nonlocal done
        if n + 1 < STAGES:
            await stage.defer_async(ep=ep, n=n + 1)
        done += 1
        if done >= total:
            finished.set()

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        for start in range(0, episodes, 500):
            await stage.batch_defer_async(
                *({"ep": e, "n": 0} for e in range(start, min(episodes, start + 500)))
            )
        started = time.perf_counter()
        worker = asyncio.create_task(
            app.run_worker_async(queues=["bench"], concurrency=concurrency, install_signal_handlers=False)
        )
        await finished.wait()
        elapsed = time.perf_counter() - started
        worker.cancel()
        # The worker ends by cancellation; whatever it raises on the way out is not the measurement.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker
    return elapsed


async def _pgqueuer(url: str, episodes: int, batch: int) -> float:
    import psycopg
    from pgqueuer.db import PsycopgDriver
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries

    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    driver = PsycopgDriver(conn)
    queries = Queries(driver)
    await queries.install()
    total = episodes * STAGES
    done = 0
    qm = QueueManager(queries)
    enqueue_conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    enqueue = Queries(PsycopgDriver(enqueue_conn))

    @qm.entrypoint("stage")
    async def stage(job) -> None:
        nonlocal done
        ep, n = json.loads(job.payload)
        if n + 1 < STAGES:
            await enqueue.enqueue("stage", json.dumps([ep, n + 1]).encode())
        done += 1
        if done >= total:
            qm.shutdown.set()

    for start in range(0, episodes, 500):
        part = range(start, min(episodes, start + 500))
        await queries.enqueue(
            ["stage"] * len(part), [json.dumps([e, 0]).encode() for e in part], [0] * len(part)
        )
    started = time.perf_counter()
    await qm.run(batch_size=batch, dequeue_timeout=timedelta(seconds=0.5))
    elapsed = time.perf_counter() - started
    await conn.close()
    await enqueue_conn.close()
    return elapsed


def run_procrastinate(url: str, episodes: int, concurrency: int) -> float:
    """Seconds for the whole chained work."""
    return asyncio.run(_procrastinate(url, episodes, concurrency))


def run_pgqueuer(url: str, episodes: int, batch: int) -> float:
    return asyncio.run(_pgqueuer(url, episodes, batch))


if __name__ == "__main__":  # a quick look: python bench/pg_peers.py
    import sys

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    import pgserver

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with pgserver.server() as srv:
        for label, fn, arg in (
            ("procrastinate c=16", run_procrastinate, 16),
            ("pgqueuer b=10", run_pgqueuer, 10),
        ):
            s = fn(srv.createdb("peer"), n, arg)
            print(f"{label}: {n * STAGES / s:.0f} executions/s ({s:.2f} s)")
