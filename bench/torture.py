"""Crash torture: SIGKILL the headless engine at random moments, restart it, and prove nothing is lost.

    .venv/bin/python bench/torture.py                 # 200 kills (a few minutes)
    .venv/bin/python bench/torture.py --kills 20 --seed 3 --workers 2 --episodes 8

A chaos demo workspace (simulated stages with short durations, the demo fault
script and random transient failures) is run by `python -m ewg_tui.cli run
--headless --until-idle` in a subprocess, which is killed with SIGKILL after a
random delay (sometimes while it is still starting or recovering), then
started again. When a run reaches idle before its kill lands, more episodes
are added, so every kill hits a working engine. After every kill the harness
checks, on the database and the items folder:

* no item lost: episode and clip counts never drop, and every episode past
  editorial has its clips;
* every stage recorded complete has its checkpoint row and its files on disk
  with the manifest's sizes and checksums (engine.checkpoints.verify); every
  `<item>/<stage>/` folder that exists is complete (its own manifest verifies),
  so no partial output is visible;
* temporary leftovers: every `.tmp-`/`.old-` folder belongs to the process
  that was just killed; anything older would mean the restart did not sweep it;
* `PRAGMA integrity_check` is ok;
* duplicate executions: a stage succeeds at most once per item (the commit is
  atomic), a lease has at most one attempt row, and at the end every lease a
  kill orphaned has exactly one rescue row (`crashed` or `dead`): a kill costs
  one rerun per item the killed process held a lease on, no more, no less;
* time to resume: from the restarted process's start to its first claim, when
  there was work ready to claim.

At the end the engine runs to idle without kills, and every item must be
done, or failed with a class that needs an operator (persistent,
missing_dependency, config_error) and a message; then the harness runs the
start-up recovery once more and expects no leftovers at all. The figures are
printed as a table (and returned by `torture()` for the test suite).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine import checkpoints, pipeline  # noqa: E402
from engine.demo import demo_config, seed_episodes, set_key  # noqa: E402
from engine.workspace import Workspace, init_workspace, open_workspace  # noqa: E402

FINAL_FAILURE_CLASSES = ("persistent", "missing_dependency", "config_error")

# Engine intervals shrunk so a restart resumes fast and rescues and retries happen within a kill cycle.
FAST = {
    "heartbeat_interval": "0.2",
    "dead_after": "1.5",
    "check_interval": "0.2",
    "poll_interval": "0.05",
    "stall_after": "2.0",  # above dead_after: engine.config refuses a stall threshold below it
    "base_delay": "0.1",
    "max_delay": "0.5",
    "stop_grace": "1.0",
    "force_grace": "0.5",
    "interval": "0.5",
    "max_attempts": "8",
    "backup_interval": "1.0",
}


def chaos_config(speed: float = 0.03, transient_probability: float = 0.05, seed: int = 7) -> str:
    """The demo pipeline with its fault script, random transient failures and fast engine intervals."""
    text = demo_config(faults=True, speed=speed, seed=seed)
    for key, value in FAST.items():
        text = set_key(text, key, value)
    text = text.replace("transient_probability = 0.0", f"transient_probability = {transient_probability}")
    return text


def fmt_seconds(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} s"


def figure_table(rows: list[tuple[str, str]]) -> str:
    """The figures as two aligned columns, as both tortures print them."""
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


@dataclass
class KillRecord:
    number: int
    delay: float  # seconds from process start to the kill
    in_flight: int  # items running when the kill landed
    reruns: int  # attempts of this run that the next start found orphaned
    resume_s: float | None  # process start to its first new attempt (None: nothing ready to claim)


@dataclass
class Figures:
    kills: int = 0
    restarts: int = 0
    refills: int = 0
    episodes: int = 0
    clips: int = 0
    items_lost: int = 0
    problems: list[str] = field(default_factory=list)
    duplicate_successes: int = 0
    reruns: int = 0
    max_reruns_per_kill: int = 0
    max_in_flight: int = 0
    resume_times: list[float] = field(default_factory=list)
    final_done: int = 0
    final_failed: int = 0
    executions: int = 0
    seconds: float = 0.0
    records: list[KillRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def resume(self, fn) -> float | None:
        return fn(self.resume_times) if self.resume_times else None

    def table(self) -> str:
        p95 = (
            sorted(self.resume_times)[max(0, int(len(self.resume_times) * 0.95) - 1)]
            if self.resume_times
            else None
        )
        rows = [
            ("kills survived", f"{self.kills}"),
            ("restarts", f"{self.restarts} ({self.refills} refills of new episodes)"),
            ("items at the end", f"{self.episodes} episodes, {self.clips} clips"),
            ("final states", f"{self.final_done} done, {self.final_failed} failed (operator classes)"),
            ("items lost", f"{self.items_lost}"),
            ("stage executions committed", f"{self.executions}"),
            ("duplicate successes", f"{self.duplicate_successes}"),
            ("reruns caused by kills", f"{self.reruns} ({self.reruns / max(1, self.kills):.2f} per kill)"),
            (
                "max reruns in one kill",
                f"{self.max_reruns_per_kill} (in flight at most {self.max_in_flight})",
            ),
            ("time to resume (median)", fmt_seconds(self.resume(statistics.median))),
            ("time to resume (p95 / max)", f"{fmt_seconds(p95)} / {fmt_seconds(self.resume(max))}"),
            ("invariant violations", f"{len(self.problems)}"),
            ("wall time", f"{self.seconds:.0f} s"),
        ]
        return figure_table(rows)


def _connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


class Torture:
    def __init__(
        self,
        root: Path,
        kills: int,
        seed: int,
        workers: int,
        episodes: int,
        max_delay: float = 2.0,
        log=print,
    ) -> None:
        self.root = Path(root)
        self.kills = kills
        self.rng = random.Random(seed)
        self.seed = seed
        self.workers = workers
        self.episodes = episodes
        self.max_delay = max_delay
        self.log = log
        self.fig = Figures()
        self.ws: Workspace | None = None
        self.db: Path | None = None
        self.items_root: Path | None = None
        self._counts = {pipeline.EPISODE: 0, pipeline.CLIP: 0}
        self._seeded = 0
        self._last_registered: str | None = None  # owner of the last process that finished recovery
        self._killed_leases: dict[str, int] = {}  # killed owner -> leases it held (each must be rescued once)
        self._stderr_log = self.root.parent / f"{self.root.name}-engine-stderr.log"

    # -- the workspace -------------------------------------------------------------------------
    def setup(self) -> None:
        ws = init_workspace(self.root, chaos_config(seed=self.seed))
        seed_episodes(ws, self.episodes)
        self._seeded = self.episodes
        self.items_root = ws.items_root
        self.db = ws.store.path
        ws.close()

    def refill(self, count: int) -> None:
        ws = open_workspace(self.root)
        try:
            seed_episodes(ws, count, start=self._seeded + 1)
        finally:
            ws.close()
        self._seeded += count
        self.fig.refills += 1

    # -- one engine process ----------------------------------------------------------------------
    def _spawn(self) -> subprocess.Popen:
        cmd = [
            sys.executable,
            "-m",
            "ewg_tui.cli",
            "--workspace",
            str(self.root),
            "--workers",
            str(self.workers),
            "run",
            "--headless",
            "--until-idle",
            "--quiet",
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with open(self._stderr_log, "ab") as err:
            return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, env=env)

    def _ready_to_claim(self, now: float) -> bool:
        with _connect(self.db) as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM items WHERE status IN ('queued','retrying') AND"
                " next_attempt_at <= ? AND next_stage IS NOT NULL",
                (now,),
            ).fetchone()
            running = conn.execute("SELECT COUNT(*) FROM items WHERE status='running'").fetchone()
        conn.close()
        return row[0] + running[0] > 0  # running items of a dead owner are rescued and claimable at once

    def _first_claim_after(self, started: float) -> float | None:
        conn = _connect(self.db)
        try:
            # Ended attempts have a row; one still running (the kill came first) is read from its lease.
            row = conn.execute(
                "SELECT MIN(t) FROM (SELECT MIN(started_at) AS t FROM attempts WHERE started_at >= ?1"
                " UNION ALL SELECT MIN(started_at) FROM items WHERE status='running'"
                " AND started_at >= ?1)",
                (started,),
            ).fetchone()
        finally:
            conn.close()
        return row[0]

    def _owner_of(self, pid: int) -> str | None:
        conn = _connect(self.db)
        try:
            row = conn.execute(
                "SELECT owner FROM engines WHERE pid=? ORDER BY started_at DESC LIMIT 1", (pid,)
            ).fetchone()
        finally:
            conn.close()
        return row[0] if row else None

    def cycle(self, number: int) -> None:
        """Start the engine, kill it after a random delay (refilling work if it went idle first), check."""
        while True:
            started = time.time()
            ready = self._ready_to_claim(started)
            proc = self._spawn()
            delay = self.rng.uniform(0.05, self.max_delay)
            owner = None
            try:
                code = proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                code = None
            if code is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                owner = self._owner_of(proc.pid)  # None: killed before it finished recovery
                in_flight = self._in_flight(owner)
                self.fig.restarts += 1
                break
            self.fig.restarts += 1
            if code != 0:
                self.fig.problems.append(
                    f"kill {number}: the engine exited with code {code} on its own (see {self._stderr_log})"
                )
                return
            self._note_registration(proc.pid)
            self.refill(max(2, self.episodes // 2))  # it finished: give the next run work to be killed in
        if owner is not None:
            self._last_registered = owner
            self._killed_leases[owner] = in_flight
        first = self._first_claim_after(started)
        resume = (first - started) if (ready and first is not None) else None
        if resume is not None:
            self.fig.resume_times.append(resume)
        self.fig.kills += 1
        self.fig.max_in_flight = max(self.fig.max_in_flight, in_flight)
        reruns = self.check(f"after kill {number}", killed_owner=owner)
        self.fig.records.append(KillRecord(number, delay, in_flight, reruns, resume))

    def _note_registration(self, pid: int) -> None:
        owner = self._owner_of(pid)
        if owner is not None:
            self._last_registered = owner

    def _in_flight(self, owner: str | None) -> int:
        if owner is None:
            return 0
        conn = _connect(self.db)
        try:
            return conn.execute(
                "SELECT COUNT(*) FROM items WHERE status='running' AND lease_owner=?", (owner,)
            ).fetchone()[0]
        finally:
            conn.close()

    # -- the invariants ----------------------------------------------------------------------------
    def check(self, when: str, killed_owner: str | None = None, final: bool = False) -> int:
        """Check every invariant on the workspace at rest; returns the reruns this kill will cost."""
        problems = self.fig.problems
        conn = _connect(self.db)
        try:
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if integrity != "ok":
                problems.append(f"{when}: integrity_check says {integrity}")
            counts = {
                k: conn.execute("SELECT COUNT(*) FROM items WHERE kind=?", (k,)).fetchone()[0]
                for k in pipeline.KINDS
            }
            for kind, n in counts.items():
                if n < self._counts[kind]:
                    lost = self._counts[kind] - n
                    self.fig.items_lost += lost
                    problems.append(f"{when}: {lost} {kind}(s) lost ({self._counts[kind]} -> {n})")
                self._counts[kind] = max(self._counts[kind], n)
            if counts[pipeline.EPISODE] < self._seeded:
                problems.append(
                    f"{when}: {self._seeded} episodes were added, {counts[pipeline.EPISODE]} remain"
                )
            items = conn.execute(
                "SELECT id, kind, stage, status, lease_owner, lease_token, error_class,"
                " error_message FROM items"
            ).fetchall()
            cps = {
                (r["item_id"], r["stage"]): r
                for r in conn.execute("SELECT item_id, stage, manifest, stale FROM checkpoints").fetchall()
            }
            clips_of: dict[str, int] = {}
            for r in conn.execute(
                "SELECT parent_id, COUNT(*) FROM items WHERE kind='clip' GROUP BY parent_id"
            ):
                clips_of[r[0]] = r[1]
            editorial = pipeline.stage_index(pipeline.EPISODE, "editorial")
            for r in items:
                self._check_item(when, r, cps)
                if (
                    r["kind"] == pipeline.EPISODE
                    and pipeline.stage_index(pipeline.EPISODE, r["stage"]) >= editorial
                ):
                    if clips_of.get(r["id"], 0) != 2:
                        problems.append(
                            f"{when}: {r['id']} completed editorial but has "
                            f"{clips_of.get(r['id'], 0)} clips (expected 2)"
                        )
            dup = conn.execute(
                "SELECT item_id, stage, COUNT(*) AS n FROM attempts WHERE outcome='succeeded'"
                " GROUP BY item_id, stage HAVING n > 1"
            ).fetchall()
            self.fig.duplicate_successes = sum(r["n"] - 1 for r in dup)
            for r in dup:
                problems.append(f"{when}: {r['item_id']} {r['stage']} succeeded {r['n']} times")
            twice = conn.execute(
                "SELECT item_id, lease_token, COUNT(*) AS n FROM attempts"
                " GROUP BY item_id, lease_token HAVING n > 1"
            ).fetchall()
            for r in twice:  # one lease, one execution: one attempt row at most
                problems.append(
                    f"{when}: {r['item_id']} has {r['n']} attempt rows for lease {r['lease_token']}"
                )
            self._check_folders(when, conn, items, killed_owner)
            reruns = 0
            if killed_owner is not None:
                # An attempt has no row until it ends, so what a kill costs is the work the killed
                # process held leases on: one rerun per leased item, each recorded when it is rescued.
                reruns = self._in_flight(killed_owner)
                self.fig.reruns += reruns
                self.fig.max_reruns_per_kill = max(self.fig.max_reruns_per_kill, reruns)
            if final:
                # Every lease a kill orphaned was recorded exactly once, by the rescue that took it back.
                for owner, leased in self._killed_leases.items():
                    rescued = conn.execute(
                        "SELECT COUNT(*) FROM attempts WHERE worker=? AND outcome IN ('crashed','dead')",
                        (owner,),
                    ).fetchone()[0]
                    if rescued != leased:
                        problems.append(
                            f"{when}: the kill of {owner} orphaned {leased} lease(s) but "
                            f"{rescued} rescue(s) were recorded"
                        )
                for r in items:
                    if r["status"] == "done":
                        self.fig.final_done += 1
                    elif (
                        r["status"] == "failed"
                        and r["error_class"] in FINAL_FAILURE_CLASSES
                        and (r["error_message"] or "").strip()
                    ):
                        self.fig.final_failed += 1
                    else:
                        problems.append(
                            f"{when}: {r['id']} ended {r['status']} / {r['error_class']} "
                            f"({r['error_message']!r}); expected done or an operator failure"
                        )
                self.fig.episodes, self.fig.clips = counts[pipeline.EPISODE], counts[pipeline.CLIP]
                self.fig.executions = conn.execute(
                    "SELECT COUNT(*) FROM attempts WHERE outcome='succeeded'"
                ).fetchone()[0]
            return reruns
        finally:
            conn.close()

    def _check_item(self, when: str, r: sqlite3.Row, cps: dict) -> None:
        problems = self.fig.problems
        order = pipeline.stages_of(r["kind"])
        done = order[: pipeline.stage_index(r["kind"], r["stage"]) + 1]
        if r["kind"] == pipeline.CLIP:
            done = done[1:]  # a clip is born "discovered" by its episode's editorial checkpoint
        for stage in done:
            cp = cps.get((r["id"], stage))
            if cp is None:
                problems.append(f"{when}: {r['id']} completed {stage} but has no checkpoint record")
                continue
            if cp["stale"]:
                problems.append(f"{when}: {r['id']} completed {stage} but its checkpoint is stale")
                continue
            manifest = json.loads(cp["manifest"])
            if not manifest.get("files"):
                problems.append(f"{when}: {r['id']} {stage}: the manifest lists no files")
            for p in checkpoints.verify(self.items_root / r["id"] / stage, manifest):
                problems.append(f"{when}: {r['id']} {stage}: {p}")

    def _check_folders(
        self, when: str, conn: sqlite3.Connection, items: list[sqlite3.Row], killed_owner: str | None
    ) -> None:
        problems = self.fig.problems
        known = {r["id"] for r in items}
        if not self.items_root.exists():
            return
        for item_dir in self.items_root.iterdir():
            if not item_dir.is_dir():
                continue
            if item_dir.name not in known:
                problems.append(f"{when}: folder {item_dir.name} belongs to no item")
                continue
            for child in item_dir.iterdir():
                if child.name.startswith(".") or child.name == "cache" or not child.is_dir():
                    continue
                manifest_path = child / checkpoints.MANIFEST
                if not manifest_path.is_file():
                    problems.append(f"{when}: {child} is visible without a manifest (partial output)")
                    continue
                for p in checkpoints.verify(child, json.loads(manifest_path.read_text(encoding="utf-8"))):
                    problems.append(f"{when}: visible output {child}: {p}")
        for path, item_id, _stage, token in checkpoints.leftovers(self.items_root):
            # who made it: an ended attempt's row, or the lease of one that was still running
            row = conn.execute(
                "SELECT worker FROM attempts WHERE item_id=?1 AND lease_token=?2 UNION ALL"
                " SELECT lease_owner FROM items WHERE id=?1 AND lease_token=?2 AND status='running'"
                " LIMIT 1",
                (item_id, token),
            ).fetchone()
            creator = row["worker"] if row else None
            if creator is None or creator != self._last_registered:
                problems.append(f"{when}: leftover {path} (made by {creator}) was not swept at restart")

    # -- the whole run ---------------------------------------------------------------------------
    def finish(self, timeout: float = 300.0) -> None:
        proc = self._spawn()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            self.fig.problems.append(f"final run: not idle after {timeout:.0f} s; {self._stuck()}")
            return
        self.fig.restarts += 1
        self._last_registered = None  # a run that ended by itself must leave no leftovers at all
        if code != 0:
            self.fig.problems.append(f"final run: exit code {code} (see {self._stderr_log})")
        self.check("at the end", final=True)
        from engine.runtime import Engine

        ws = open_workspace(self.root)
        try:
            Engine(ws, workers=0).recover()
            left = checkpoints.leftovers(ws.items_root)
            if left:
                self.fig.problems.append(f"at the end: {len(left)} leftovers after recovery: {left[:3]}")
            backups = sorted(ws.backups.glob("ewg-*.db"))
        finally:
            ws.close()
        for b in backups:
            try:
                c = sqlite3.connect(f"file:{b}?mode=ro", uri=True)
                try:
                    res = c.execute("PRAGMA integrity_check").fetchone()[0]
                finally:
                    c.close()
            except sqlite3.DatabaseError as exc:
                res = str(exc)
            if res != "ok":
                self.fig.problems.append(
                    f"backup {b.name} is damaged ({res}); a kill during a backup must not "
                    "leave a backup-looking file"
                )

    def _stuck(self) -> str:
        """What keeps the engine from going idle: the items that are not in a final state."""
        conn = _connect(self.db)
        try:
            rows = conn.execute(
                "SELECT id, stage, next_stage, status, attempts, rescues, blocked_reason, lease_owner,"
                " next_attempt_at - ? AS due_in FROM items WHERE status NOT IN ('done','failed')"
                " LIMIT 10",
                (time.time(),),
            ).fetchall()
            state = conn.execute("SELECT key, value FROM engine_state").fetchall()
        finally:
            conn.close()
        return f"engine_state {[tuple(r) for r in state]}; not final: " + "; ".join(
            str(dict(r)) for r in rows
        )

    def run(self) -> Figures:
        t0 = time.time()
        self.setup()
        for n in range(1, self.kills + 1):
            self.cycle(n)
            if n % 10 == 0 or n == self.kills:
                self.log(
                    f"  {n}/{self.kills} kills, {len(self.fig.problems)} problem(s), "
                    f"{self._counts[pipeline.EPISODE]} episodes / {self._counts[pipeline.CLIP]} clips so far"
                )
        self.finish()
        self.fig.seconds = time.time() - t0
        return self.fig


def torture(
    root: Path,
    kills: int = 200,
    seed: int = 1,
    workers: int = 2,
    episodes: int = 12,
    max_delay: float = 2.0,
    log=print,
) -> Figures:
    return Torture(root, kills, seed, workers, episodes, max_delay=max_delay, log=log).run()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--kills", type=int, default=200, help="SIGKILLs that must land on a running engine (200)"
    )
    ap.add_argument("--seed", type=int, default=1, help="random seed for the kill moments and the chaos (1)")
    ap.add_argument("--workers", type=int, default=2, help="engine worker threads (2)")
    ap.add_argument(
        "--episodes", type=int, default=12, help="episodes at the start; more are added when idle (12)"
    )
    ap.add_argument(
        "--max-delay", type=float, default=2.0, help="longest time a run lives before its kill (2.0 s)"
    )
    ap.add_argument(
        "--keep", metavar="DIR", help="build the workspace here and keep it (default: a temp folder)"
    )
    ap.add_argument(
        "--backend",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="sqlite: one engine killed and restarted; postgresql: --hosts engine hosts on one server"
        " (bench/torture_hosts.py; needs unshare)",
    )
    ap.add_argument("--hosts", type=int, default=3, help="engine hosts with --backend postgresql (3)")
    args = ap.parse_args(argv)
    if args.backend == "postgresql":
        from torture_hosts import torture_hosts

        print(
            f"multi-host torture: {args.hosts} hosts on one PostgreSQL, {args.kills} host kills, "
            f"seed {args.seed}, {args.workers} workers each, {args.episodes} episodes at the start",
            flush=True,
        )
        figs = torture_hosts(args.hosts, args.kills, args.seed, args.workers, args.episodes)
        print("\nfigures:")
        print(figs.table())
        for p in figs.problems[:50]:
            print(f"  - {p}")
        print("\nall invariants held." if not figs.problems else f"\n{len(figs.problems)} violation(s).")
        return 0 if not figs.problems else 1
    if args.keep:
        root = Path(args.keep).resolve()
        if root.exists():
            ap.error(f"{root} exists; choose a new folder")
        tmp = None
    else:
        tmp = tempfile.TemporaryDirectory(prefix="ewg-torture-")
        root = Path(tmp.name) / "ws"
    print(
        f"crash torture: {args.kills} kills, seed {args.seed}, {args.workers} workers, "
        f"{args.episodes} episodes at the start, workspace {root}",
        flush=True,
    )
    fig = torture(
        root,
        args.kills,
        args.seed,
        args.workers,
        args.episodes,
        args.max_delay,
        log=lambda s: print(s, flush=True),
    )
    print("\nfigures:")
    print(fig.table())
    if fig.problems:
        print(f"\n{len(fig.problems)} invariant violation(s):")
        for p in fig.problems[:50]:
            print(f"  - {p}")
    else:
        print("\nall invariants held after every kill and at the end.")
    if tmp is not None:
        tmp.cleanup()
    return 0 if fig.ok else 1


if __name__ == "__main__":
    sys.exit(main())
