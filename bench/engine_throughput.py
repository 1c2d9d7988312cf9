"""Engine throughput: N episodes x 5 no-op stages, ewg's engine against huey's SqliteHuey.

    .venv/bin/python bench/engine_throughput.py [--episodes 2000] [--workers 4]
                                                [--synchronous NORMAL FULL] [--repeat 1]

Both systems run the same chained work in the same process, one after the other,
on a fresh SQLite database in WAL mode in a temporary directory, at the same
`PRAGMA synchronous`:

* ewg: a workspace whose five episode stages are `kind = "noop"`; N episodes are
  inserted (one transaction, not timed); the clock runs from `Engine.start()`
  until `run_until_idle()` sees nothing queued or running (polled every 2 ms).
  Every stage execution is a real one: claim with lease and fencing token, an
  attempts row, a temporary output directory, an atomic (empty) checkpoint and
  the fenced completion; heartbeats, watchdog and health loops run as usual.
* huey: one task per stage; a stage's task enqueues the next stage's task
  (5 chained tasks per episode). N first-stage tasks are enqueued (not timed);
  the clock runs from `Consumer.start()` (thread workers) until the N x 5-th
  task has run.

Commits are counted the same way for both: an sqlite3 trace callback on every
connection each system opens sees every statement; a COMMIT whose transaction
changed rows (`total_changes` grew since its BEGIN), or a write statement run
in autocommit mode, counts as one commit. Empty transactions (a huey dequeue
that found nothing) are counted separately and are not in "commits/exec".
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

STAGES = 5
SYNC_LEVEL = {"OFF": 0, "NORMAL": 1, "FULL": 2}


# -- commit counting --------------------------------------------------------------------------
@dataclass
class CommitCounter:
    commits: int = 0  # write transactions committed (incl. autocommit writes)
    empty: int = 0  # COMMITs of transactions that changed nothing
    statements: int = 0
    kinds: collections.Counter = field(default_factory=collections.Counter)
    enabled: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, conn: sqlite3.Connection) -> None:
        """Install a trace callback on `conn` (idempotent per connection)."""
        state = {"begin": None, "first": None}
        write_re = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)

        def trace(sql: str) -> None:
            if not self.enabled:
                return
            c = conn
            head = sql.lstrip()[:12].upper()
            with self._lock:
                self.statements += 1
                if head.startswith("BEGIN"):
                    state["begin"], state["first"] = c.total_changes, None
                elif head.startswith("COMMIT") or head.startswith("END"):
                    if state["begin"] is not None and c.total_changes > state["begin"]:
                        self.commits += 1
                        self.kinds[state["first"] or "?"] += 1
                    else:
                        self.empty += 1
                    state["begin"] = None
                elif head.startswith("ROLLBACK"):
                    state["begin"] = None
                elif write_re.match(sql):
                    if state["begin"] is None and not c.in_transaction:
                        self.commits += 1  # autocommit write: its own transaction
                        self.kinds[_label(sql)] += 1
                    elif state["first"] is None:
                        state["first"] = _label(sql)

        conn.set_trace_callback(trace)


def _label(sql: str) -> str:
    """A short name for a transaction, from its first write statement."""
    s = " ".join(sql.split())
    m = re.match(
        r"(?i)(INSERT INTO|INSERT OR \w+ INTO|UPDATE|DELETE FROM|REPLACE INTO)\s+(\w+)(\s+SET\s+(\w+))?", s
    )
    if not m:
        return s[:40]
    verb, table, _, col = m.groups()
    return f"{verb.split()[0].lower()} {table}" + (f" ({col}=...)" if col else "")


@dataclass
class Result:
    system: str
    synchronous: str
    executions: int
    seconds: float
    commits: int
    empty: int
    extra: dict = field(default_factory=dict)
    kinds: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.executions / self.seconds

    @property
    def commits_per_exec(self) -> float:
        return self.commits / self.executions


# -- ewg --------------------------------------------------------------------------------------
def ewg_config(synchronous: str) -> str:
    from engine import pipeline
    from engine.demo import set_key
    from engine.workspace import DEFAULT_TOML

    text = set_key(DEFAULT_TOML, "synchronous", f'"{synchronous}"')
    for stage in pipeline.EPISODE_STAGES:
        text += f'\n[stages.episode.{stage}]\nkind = "noop"\n'
    return text


def seed_episodes(ws, episodes: int) -> None:
    """N episodes ready for their first stage, in one unit (not timed): the row add_episode writes."""
    from engine import pipeline

    now = ws.clock.now()
    first = pipeline.next_stage(pipeline.EPISODE, None)
    row = (pipeline.EPISODE, "bench", first, pipeline.EPISODE_STAGES[-1], "queued", now, now, now)
    with ws.store.write() as unit:
        unit.executemany(
            "INSERT INTO items (id, source, title, kind, show, next_stage, target_stage, status,"
            " next_attempt_at, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [(f"ep{i:06d}", f"bench://{i}.mp4", f"episode {i}", *row) for i in range(episodes)],
        )


def run_ewg(
    tmp: Path, episodes: int, workers: int, synchronous: str, profile: str | None = None, poll: float = 0.002
) -> Result:
    from engine.runtime import Engine
    from engine.workspace import init_workspace

    ws = init_workspace(tmp / "ewg", ewg_config(synchronous))
    counter = CommitCounter()
    store = ws.store
    original = store.connection
    seen: set[int] = set()

    def connection() -> sqlite3.Connection:  # every thread's connection gets the tracer
        conn = original()
        if id(conn) not in seen:
            seen.add(id(conn))
            counter.attach(conn)
        return conn

    store.connection = connection  # type: ignore[method-assign]
    seed_episodes(ws, episodes)
    level = store.connection().execute("PRAGMA synchronous").fetchone()[0]
    assert level == SYNC_LEVEL[synchronous], (level, synchronous)

    fsyncs = [0]
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:  # fsyncs the engine does itself (checkpoint dirs)
        fsyncs[0] += 1
        real_fsync(fd)

    engine = Engine(ws, workers=workers)
    os.fsync = counting_fsync
    counter.enabled = True
    t0 = time.perf_counter()
    try:
        if profile:
            _profile_threads()
        engine.start()
        engine.run_until_idle(poll=poll)
        seconds = time.perf_counter() - t0
    finally:
        counter.enabled = False
        os.fsync = real_fsync
        if profile:
            threading.setprofile(None)
        engine.stop()  # joins every engine thread: nothing touches the store after this
    done = store.read_one("SELECT COUNT(*) FROM items WHERE status='done'")[0]
    ok = store.read_one("SELECT COUNT(*) FROM attempts WHERE outcome='succeeded'")[0]
    ws.close()
    if done != episodes or ok != episodes * STAGES:
        row = store.read_one("SELECT id, status, error_message FROM items WHERE status != 'done' LIMIT 1")
        print(f"first unfinished item: {tuple(row) if row else None}", file=sys.stderr)
        raise SystemExit(f"ewg run incomplete: {done}/{episodes} episodes done, {ok} successful attempts")
    return Result(
        "ewg",
        synchronous,
        ok,
        seconds,
        counter.commits,
        counter.empty,
        extra={"engine fsyncs/exec": fsyncs[0] / ok},
        kinds=dict(counter.kinds),
    )


_PROFILES: list = []


def _profile_threads() -> None:
    """Profile every thread started from now on into one cProfile.Profile (per-thread profilers merged)."""
    import cProfile

    def start(*_a):
        p = cProfile.Profile()
        _PROFILES.append(p)
        sys.setprofile(None)
        p.enable()

    threading.setprofile(start)


# -- huey -------------------------------------------------------------------------------------
def run_huey(tmp: Path, episodes: int, workers: int, synchronous: str) -> Result:
    import huey
    from huey.consumer import Consumer
    from huey.storage import SqliteStorage

    counter = CommitCounter()

    class Storage(SqliteStorage):
        """huey's SqliteStorage; only adds the commit tracer and the synchronous level.

        SqliteStorage takes fsync=True (synchronous=FULL) or fsync=False (OFF), nothing for
        NORMAL, so the pragma is issued on each new connection instead; it is checked below."""

        def _create_connection(self):
            conn = super()._create_connection()
            conn.execute(f"PRAGMA synchronous={synchronous}")
            counter.attach(conn)
            return conn

    h = huey.SqliteHuey(name="bench", filename=str(tmp / "huey.db"), immediate=False, storage_class=Storage)
    total = episodes * STAGES
    ran = [0]
    lock = threading.Lock()
    finished = threading.Event()

    @h.task()
    def stage(episode: int, n: int) -> None:
        if n + 1 < STAGES:
            stage(episode, n + 1)  # chained: this stage enqueues the next one
        with lock:
            ran[0] += 1
            if ran[0] == total:
                finished.set()

    for i in range(episodes):
        stage(i, 0)
    level = h.storage.conn.execute("PRAGMA synchronous").fetchone()[0]
    mode = h.storage.conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert level == SYNC_LEVEL[synchronous] and mode.lower() == "wal", (level, mode)
    consumer = Consumer(h, workers=workers, worker_type="thread", periodic=False)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    counter.enabled = True
    t0 = time.perf_counter()
    try:
        consumer.start()
        if not finished.wait(600):
            raise SystemExit(f"huey run incomplete: {ran[0]}/{total} tasks ran")
        seconds = time.perf_counter() - t0
    finally:
        counter.enabled = False
        consumer.stop(graceful=True)
        for s, handler in handlers.items():
            signal.signal(s, handler)
    h.storage.close()
    return Result(
        "huey", synchronous, ran[0], seconds, counter.commits, counter.empty, kinds=dict(counter.kinds)
    )


# -- main -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--episodes", type=int, default=2000, help="episodes (each runs 5 no-op stages); default 2000"
    )
    ap.add_argument("--workers", type=int, default=4, help="worker threads for both systems; default 4")
    ap.add_argument(
        "--synchronous",
        nargs="+",
        type=str.upper,
        choices=("NORMAL", "FULL"),
        default=["NORMAL", "FULL"],
        help="SQLite synchronous level(s); default: NORMAL FULL",
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs per system and level; the median is shown")
    ap.add_argument("--only", choices=("ewg", "huey"), help="run one system (for profiling)")
    ap.add_argument("--profile", metavar="FILE", help="cProfile the ewg run's threads into FILE (slows it)")
    ap.add_argument(
        "--poll", type=float, default=0.002, help="ewg: run_until_idle poll interval (s); default 0.002"
    )
    ap.add_argument("--verbose", action="store_true", help="show commits by transaction kind")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    ap.add_argument(
        "--backend",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="sqlite: ewg against huey in one process; postgresql: ewg engine processes against"
        " procrastinate and pgqueuer on one throwaway PostgreSQL server (bench/pgserver.py)",
    )
    ap.add_argument("--processes", type=int, default=3, help="postgresql: ewg engine processes (3)")
    args = ap.parse_args(argv)
    if args.backend == "postgresql":
        return main_postgresql(args)

    import huey

    print(
        f"engine throughput: {args.episodes} episodes x {STAGES} no-op stages = "
        f"{args.episodes * STAGES} stage executions, {args.workers} worker threads, "
        f"repeat {args.repeat}"
    )
    print(
        f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, huey {huey.__version__}, "
        f"{os.cpu_count()} cpus, {platform.machine()}"
    )
    results: dict[tuple[str, str], list[Result]] = collections.defaultdict(list)
    for level in args.synchronous:
        for r in range(args.repeat):
            order = ("ewg", "huey") if r % 2 == 0 else ("huey", "ewg")  # alternate who goes first
            for system in order:
                if args.only and system != args.only:
                    continue
                with tempfile.TemporaryDirectory(prefix=f"ewg-bench-{system}-") as tmp:
                    if system == "ewg":
                        res = run_ewg(Path(tmp), args.episodes, args.workers, level, args.profile, args.poll)
                        if args.profile:
                            _dump_profiles(args.profile)
                    else:
                        res = run_huey(Path(tmp), args.episodes, args.workers, level)
                results[(system, level)].append(res)
                print(
                    f"  {system:4} synchronous={level:6} run {r + 1}: {res.rate:8.0f} exec/s "
                    f"({res.seconds:.2f} s), {res.commits_per_exec:.2f} commits/exec",
                    flush=True,
                )

    print()
    header = (
        f"{'synchronous':11} | {'ewg exec/s':>10} | {'huey exec/s':>11} | {'ewg/huey':>8} | "
        f"{'ewg commits/exec':>16} | {'huey commits/exec':>17}"
    )
    print(header)
    print("-" * len(header))
    summary = []
    for level in args.synchronous:
        e, h = results.get(("ewg", level)), results.get(("huey", level))
        e_rate = statistics.median(x.rate for x in e) if e else float("nan")
        h_rate = statistics.median(x.rate for x in h) if h else float("nan")
        e_cpe = statistics.median(x.commits_per_exec for x in e) if e else float("nan")
        h_cpe = statistics.median(x.commits_per_exec for x in h) if h else float("nan")
        ratio = e_rate / h_rate if e and h else float("nan")
        print(f"{level:11} | {e_rate:10.0f} | {h_rate:11.0f} | {ratio:7.2f}x | {e_cpe:16.2f} | {h_cpe:17.2f}")
        summary.append(
            {
                "synchronous": level,
                "ewg_exec_per_s": e_rate,
                "huey_exec_per_s": h_rate,
                "ratio": ratio,
                "ewg_commits_per_exec": e_cpe,
                "huey_commits_per_exec": h_cpe,
            }
        )
    print()
    for level in args.synchronous:
        for system in ("ewg", "huey"):
            runs = results.get((system, level))
            if not runs:
                continue
            last = runs[-1]
            extra = ", ".join(f"{k} {v:.2f}" for k, v in last.extra.items())
            print(
                f"{system} {level}: {last.commits} commits, {last.empty} empty transactions"
                + (f", {extra}" if extra else "")
            )
            if args.verbose:
                for kind, n in sorted(last.kinds.items(), key=lambda kv: -kv[1]):
                    print(f"    {n / last.executions:6.3f}/exec  {kind}")
    print()
    print("Target: ewg >= 2x huey at the same synchronous level.")
    print(
        "Commits: sqlite3 trace callback on every connection; a COMMIT whose transaction changed rows, or a\n"
        "write statement in autocommit mode, is one commit; empty transactions are listed apart."
    )
    print(
        "Not the same guarantees: ewg keeps at-least-once semantics -- a lease with a fencing token per\n"
        "claim, a durable attempts row per execution, heartbeats, a watchdog that rescues dead work, and an\n"
        "atomic checkpoint committed with the fenced completion. huey deletes a task from its queue when a\n"
        "worker dequeues it (at-most-once): a crash mid-task loses the task and every later stage of its chain."
    )
    if args.json:
        print(json.dumps(summary, indent=1))
    return 0


# -- PostgreSQL -------------------------------------------------------------------------------
def run_ewg_postgresql(srv, tmp: Path, episodes: int, processes: int, workers: int) -> tuple[float, float]:
    """ewg on the server: `processes` engine processes x `workers` workers drain the chained work.
    Returns (executions/s from the first claim to the last completion, wall seconds incl. start-up)."""
    import subprocess

    from engine.workspace import init_workspace

    url = srv.createdb("ewg")
    os.environ["EWG_DATABASE_URL"] = url
    try:
        ws = init_workspace(tmp / "ewg", ewg_config("NORMAL"))
        seed_episodes(ws, episodes)
        root = Path(__file__).resolve().parents[1]
        cmd = [
            sys.executable,
            "-m",
            "ewg_tui.cli",
            "--workspace",
            str(tmp / "ewg"),
            "--workers",
            str(workers),
            "run",
            "--headless",
            "--until-idle",
            "--quiet",
        ]
        env = {**os.environ, "PYTHONPATH": str(root)}
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL) for _ in range(processes)
        ]
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - t0
        ok, start, end = ws.store.read_one(
            "SELECT COUNT(*), MIN(started_at), MAX(ended_at) FROM attempts WHERE outcome='succeeded'"
        )
        ws.close()
    finally:
        os.environ.pop("EWG_DATABASE_URL", None)
    if any(codes) or ok != episodes * STAGES:
        raise SystemExit(f"ewg run incomplete: exit codes {codes}, {ok}/{episodes * STAGES} executions")
    return ok / (end - start), wall


def main_postgresql(args) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import pgserver
    import psycopg
    from pg_peers import run_pgqueuer, run_procrastinate

    n = args.episodes * STAGES
    print(
        f"engine throughput on PostgreSQL: {args.episodes} episodes x {STAGES} no-op stages = {n} executions; "
        f"ewg {args.processes} processes x {args.workers} workers; repeat {args.repeat}"
    )
    rows: dict[str, list[float]] = collections.defaultdict(list)
    with pgserver.server() as srv, tempfile.TemporaryDirectory(prefix="ewg-bench-pg-") as tmp:
        with psycopg.connect(srv.url) as c:
            version = c.execute("SHOW server_version").fetchone()[0]
            fsync = c.execute("SHOW fsync").fetchone()[0]
        print(f"PostgreSQL {version} (fsync {fsync}, default settings), {os.cpu_count()} cpus")
        for r in range(args.repeat):
            rate, wall = run_ewg_postgresql(
                srv, Path(tmp) / f"r{r}", args.episodes, args.processes, args.workers
            )
            rows[f"ewg {args.processes}x{args.workers}"].append(rate)
            print(
                f"  ewg run {r + 1}: {rate:.0f} exec/s (first claim to last completion; {wall:.1f} s wall)",
                flush=True,
            )
            for conc in (4, 16):
                s = run_procrastinate(srv.createdb("procrastinate"), args.episodes, conc)
                rows[f"procrastinate concurrency={conc}"].append(n / s)
                print(f"  procrastinate concurrency={conc} run {r + 1}: {n / s:.0f} exec/s", flush=True)
            for batch in (10, 50):
                s = run_pgqueuer(srv.createdb("pgqueuer"), args.episodes, batch)
                rows[f"pgqueuer batch={batch}"].append(n / s)
                print(f"  pgqueuer batch={batch} run {r + 1}: {n / s:.0f} exec/s", flush=True)
    print()
    best_proc = max(statistics.median(v) for k, v in rows.items() if k.startswith("procrastinate"))
    best_pgq = max(statistics.median(v) for k, v in rows.items() if k.startswith("pgqueuer"))
    print(f"{'system':34} | {'exec/s (median)':>15} | {'x best procrastinate':>20} | {'x best pgqueuer':>15}")
    for k, v in rows.items():
        m = statistics.median(v)
        print(f"{k:34} | {m:15.0f} | {m / best_proc:19.2f}x | {m / best_pgq:14.2f}x")
    print("\nTarget: ewg >= 5x procrastinate and ahead of pgqueuer, at the same durability (fsync on).")
    return 0


def _dump_profiles(path: str) -> None:
    import pstats

    if not _PROFILES:
        return
    stats = None
    for p in _PROFILES:
        p.disable()
        stats = pstats.Stats(p) if stats is None else (stats.add(p) or stats)
    _PROFILES.clear()
    stats.dump_stats(path)
    print(f"  profile of the ewg threads written to {path}")


if __name__ == "__main__":
    sys.exit(main())
