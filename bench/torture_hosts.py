"""Multi-host torture: several engine hosts on one PostgreSQL server and one shared items folder.

    .venv/bin/python bench/torture.py --backend postgresql --hosts 3 [--kills 12] [--seed 7]

Each host is an `ewg run --headless` in its own PID, UTS and mount namespace (`unshare --pid
--uts --fork --mount-proc`, hostname `host-N`): it cannot see the other hosts' processes, so it can
judge their work only by heartbeats, as a real second machine would. All share one throwaway
PostgreSQL server (bench/pgserver.py, default settings, fsync on) and one items folder.

The harness, at random moments:
* kills a whole host (SIGKILL to the namespace's first process takes every process in it) and boots
  it again a moment later under the same hostname;
* freezes one host (SIGSTOP to every process in it) for longer than its lease, then thaws it:
  its late writes must be refused by the lease-token fence;
* restarts the PostgreSQL server once (immediate shutdown, as a crash: recovery from the WAL).

Then it lets the hosts run the work to the end and checks: no item lost, no stage that succeeded
twice, every completed stage with its checkpoint files, no attempt spent on a dead host (a rescue
of a dead owner's lease never counts against max_attempts), every item done or failed with a class
that needs an operator, and how long a dead host's work waited before another host took it.
Needs root (or user namespaces) for unshare.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import pgserver  # noqa: E402
from torture import FINAL_FAILURE_CLASSES, chaos_config, figure_table, fmt_seconds  # noqa: E402

from engine import checkpoints, pipeline  # noqa: E402
from engine.demo import seed_episodes, set_key  # noqa: E402
from engine.workspace import init_workspace, open_workspace  # noqa: E402

LEASE = 3.0  # seconds: a frozen host loses its leases after this (and dead_after) has passed
IDLE = ("done", "failed", "stopped", "blocked")


@dataclass
class HostFigures:
    hosts: int = 0
    host_kills: int = 0
    freezes: int = 0
    server_restarts: int = 0
    episodes: int = 0
    clips: int = 0
    items_lost: int = 0
    duplicate_successes: int = 0
    spent_on_dead_hosts: int = 0
    late_writes_refused: int = 0
    rescue_times: list[float] = field(default_factory=list)
    final_done: int = 0
    final_failed: int = 0
    executions: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def table(self) -> str:
        med = statistics.median(self.rescue_times) if self.rescue_times else None
        worst = max(self.rescue_times) if self.rescue_times else None
        rows = [
            ("hosts", f"{self.hosts} (own PID/UTS namespaces, one PostgreSQL, one items folder)"),
            ("whole hosts killed", f"{self.host_kills}"),
            ("hosts frozen past their lease", f"{self.freezes}"),
            ("PostgreSQL restarts", f"{self.server_restarts}"),
            ("items at the end", f"{self.episodes} episodes, {self.clips} clips"),
            ("final states", f"{self.final_done} done, {self.final_failed} failed (operator classes)"),
            ("items lost", f"{self.items_lost}"),
            ("duplicate successes", f"{self.duplicate_successes}"),
            ("attempts spent on dead hosts", f"{self.spent_on_dead_hosts}"),
            ("late writes of a frozen host refused", f"{self.late_writes_refused}"),
            ("stage executions committed", f"{self.executions}"),
            ("time to rescue a dead host's work", f"median {fmt_seconds(med)}, max {fmt_seconds(worst)}"),
            ("invariant violations", f"{len(self.problems)}"),
            ("wall time", f"{self.seconds:.0f} s"),
        ]
        return figure_table(rows)


class Host:
    """One machine: an engine in namespaces of its own."""

    def __init__(self, name: str, root: Path, workers: int, env: dict, log: Path) -> None:
        self.name, self.root, self.workers, self.env, self.log = name, root, workers, env, log
        self.proc: subprocess.Popen | None = None

    def boot(self) -> None:
        engine = (
            f"hostname {self.name} && exec {sys.executable} -m ewg_tui.cli --workspace {self.root}"
            f" --workers {self.workers} run --headless --quiet"
        )
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                ["unshare", "--pid", "--uts", "--fork", "--mount-proc", "--", "sh", "-c", engine],
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=ROOT,
                env=self.env,
            )

    def processes(self) -> list[psutil.Process]:
        if self.proc is None:
            return []
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def signal_all(self, sig: int) -> None:
        for p in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(sig)

    def _end(self, sig: int, wait: float) -> None:
        """Signal the namespace's first process (PID 1 inside: every process goes with it) and reap."""
        inner = self.processes()
        if inner:
            with contextlib.suppress(psutil.NoSuchProcess):
                inner[0].send_signal(sig)
        if self.proc is not None:
            self.proc.wait(wait)
        self.proc = None

    def kill(self) -> None:
        """The machine dies."""
        self._end(signal.SIGKILL, 10)

    def stop(self) -> None:
        """The machine shuts down: the engine releases its work on SIGTERM."""
        try:
            self._end(signal.SIGTERM, 30)
        except subprocess.TimeoutExpired:
            self.kill()


class MultiHostTorture:
    def __init__(self, hosts: int, kills: int, seed: int, workers: int, episodes: int, log=print) -> None:
        self.n_hosts, self.kills, self.seed = hosts, kills, seed
        self.workers, self.episodes, self.log = workers, episodes, log
        self.rng = random.Random(seed)
        self.fig = HostFigures(hosts=hosts)
        self.tmp = Path(tempfile.mkdtemp(prefix="ewg-torture-hosts."))
        self.root = self.tmp / "shared" / "ws"  # the folder every host mounts
        self.server = pgserver.Server()
        self.hosts: list[Host] = []
        self.ws = None

    # -- set-up ------------------------------------------------------------------------------
    def setup(self) -> None:
        self.server.start()
        url = self.server.createdb("torture")
        os.environ["EWG_DATABASE_URL"] = url
        text = chaos_config(speed=0.15, seed=self.seed)  # stages long enough for kills to land in
        text = set_key(text, "lease_duration", str(LEASE))
        ws = init_workspace(self.root, text)
        seed_episodes(ws, self.episodes)
        ws.close()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "EWG_DATABASE_URL": url}
        self.hosts = [
            Host(f"host-{i + 1}", self.root, self.workers, env, self.tmp / f"host-{i + 1}.log")
            for i in range(self.n_hosts)
        ]
        self.ws = open_workspace(self.root, readonly=True)

    def close(self) -> None:
        for host in self.hosts:
            if host.proc is not None:
                host.kill()
        if self.ws is not None:
            self.ws.close()
        self.server.close()
        os.environ.pop("EWG_DATABASE_URL", None)

    # -- reading the shared database -----------------------------------------------------------
    def _read(self, sql: str, params=()) -> list:
        for _ in range(100):  # the server may be restarting: the repository reconnects
            try:
                return self.ws.store.read(sql, params)
            except Exception:
                time.sleep(0.2)
        raise RuntimeError("the database did not come back")

    def _held_by(self, host: Host) -> dict[str, int]:
        rows = self._read(
            "SELECT id, lease_token FROM items WHERE status='running' AND lease_owner LIKE ?",
            (f"{host.name}:%",),
        )
        return {r["id"]: r["lease_token"] for r in rows}

    def _wait_rescued(self, held: dict[str, int], since: float, limit: float = 60.0) -> None:
        """Time until each item a dead host held is running (or finished) under another lease."""
        pending = dict(held)
        while pending and time.time() - since < limit:
            for item_id, token in list(pending.items()):
                row = self._read("SELECT lease_token, status FROM items WHERE id=?", (item_id,))
                if row and row[0]["lease_token"] != token:
                    self.fig.rescue_times.append(time.time() - since)
                    del pending[item_id]
            time.sleep(0.05)
        for item_id in pending:
            self.fig.problems.append(f"{item_id}: held by a dead host and not rescued within {limit:.0f} s")

    # -- the chaos -----------------------------------------------------------------------------
    def run(self) -> HostFigures:
        started = time.time()
        self.setup()
        try:
            for host in self.hosts:
                host.boot()
            time.sleep(3)
            restart_at = self.rng.randrange(max(1, self.kills))
            freeze_at = self.rng.randrange(max(1, self.kills))
            for n in range(self.kills):
                self._refill_if_idle()
                time.sleep(self.rng.uniform(0.5, 3.0))
                victim = self.rng.choice(self.hosts)
                held = self._held_by(victim)
                at = time.time()
                victim.kill()
                self.fig.host_kills += 1
                self.log(f"kill {n + 1}: {victim.name} died holding {len(held)} lease(s)")
                self._wait_rescued(held, at)
                victim.boot()  # the machine comes back under its name
                if n == freeze_at:
                    self._freeze(self.rng.choice(self.hosts))
                if n == restart_at:
                    self.log("restarting the PostgreSQL server (immediate, as a crash)")
                    self.server.restart()
                    self.fig.server_restarts += 1
            self._drain()
        finally:
            for host in self.hosts:
                host.stop()
            try:
                self.check()
            finally:
                self.fig.seconds = time.time() - started
                self.close()
        return self.fig

    def _refill_if_idle(self) -> None:
        busy = self._read(
            "SELECT COUNT(*) FROM items WHERE status NOT IN ('done','failed','stopped','blocked')"
        )
        if busy[0][0] == 0:
            ws = open_workspace(self.root)
            try:
                count = int(self._read("SELECT COUNT(*) FROM items WHERE kind='episode'")[0][0])
                seed_episodes(ws, max(2, self.episodes // 2), start=count + 1)
            finally:
                ws.close()

    def _freeze(self, host: Host) -> None:
        """SIGSTOP the whole host past its lease, then SIGCONT: what it wrote late must be refused."""
        held = self._held_by(host)
        self.log(f"freezing {host.name} holding {len(held)} lease(s)")
        host.signal_all(signal.SIGSTOP)
        self.fig.freezes += 1
        at = time.time()
        self._wait_rescued(held, at, limit=LEASE * 10)
        host.signal_all(signal.SIGCONT)
        time.sleep(LEASE)
        for item_id, token in held.items():
            late = self._read(
                "SELECT COUNT(*) FROM attempts WHERE item_id=? AND lease_token=? AND outcome='succeeded'",
                (item_id, token),
            )[0][0]
            if late == 0:
                self.fig.late_writes_refused += 1
            else:
                self.fig.problems.append(
                    f"{item_id}: a frozen host's late completion (lease {token}) was accepted"
                )

    def _drain(self, limit: float = 600.0) -> None:
        deadline = time.time() + limit
        while time.time() < deadline:
            rows = self._read(
                "SELECT COUNT(*) FROM items WHERE status NOT IN ('done','failed','stopped','blocked')"
            )
            if rows[0][0] == 0:
                return
            time.sleep(0.5)
        self.fig.problems.append(f"the hosts did not finish the work within {limit:.0f} s")

    # -- the invariants ------------------------------------------------------------------------
    def check(self) -> None:
        f = self.fig
        counts = {
            k: int(self._read("SELECT COUNT(*) FROM items WHERE kind=?", (k,))[0][0]) for k in pipeline.KINDS
        }
        f.episodes, f.clips = counts[pipeline.EPISODE], counts[pipeline.CLIP]
        if f.episodes < self.episodes:
            f.items_lost += self.episodes - f.episodes
            f.problems.append(f"{self.episodes - f.episodes} episode(s) lost")
        dup = self._read(
            "SELECT item_id, stage, COUNT(*) AS n FROM attempts WHERE outcome='succeeded'"
            " GROUP BY item_id, stage HAVING COUNT(*) > 1"
        )
        f.duplicate_successes = sum(r["n"] - 1 for r in dup)
        f.problems += [f"{r['item_id']} {r['stage']} succeeded {r['n']} times" for r in dup]
        f.spent_on_dead_hosts = int(
            self._read("SELECT COUNT(*) FROM attempts WHERE outcome IN ('dead','crashed') AND spent = TRUE")[
                0
            ][0]
        )
        if f.spent_on_dead_hosts:
            f.problems.append(
                f"{f.spent_on_dead_hosts} attempt(s) of dead hosts counted against max_attempts"
            )
        f.executions = int(self._read("SELECT COUNT(*) FROM attempts WHERE outcome='succeeded'")[0][0])
        cps = {
            (r["item_id"], r["stage"]): r["manifest"]
            for r in self._read("SELECT item_id, stage, manifest FROM checkpoints WHERE stale = FALSE")
        }
        items_root = self.root / "items"
        clips_of: dict[str, int] = {}
        for r in self._read(
            "SELECT parent_id, COUNT(*) AS n FROM items WHERE kind='clip' GROUP BY parent_id"
        ):
            clips_of[r["parent_id"]] = r["n"]
        editorial = pipeline.stage_index(pipeline.EPISODE, "editorial")
        for r in self._read("SELECT id, kind, stage, status, error_class, error_message FROM items"):
            if r["status"] == "done":
                f.final_done += 1
            elif r["status"] == "failed" and r["error_class"] in FINAL_FAILURE_CLASSES and r["error_message"]:
                f.final_failed += 1
            else:
                f.problems.append(f"{r['id']} ended {r['status']} / {r['error_class']}")
            if (
                r["kind"] == pipeline.EPISODE
                and pipeline.stage_index(pipeline.EPISODE, r["stage"]) >= editorial
            ):
                if clips_of.get(r["id"], 0) != 2:
                    f.problems.append(
                        f"{r['id']} completed editorial but has {clips_of.get(r['id'], 0)} clips"
                    )
            order = pipeline.stages_of(r["kind"])
            done = order[: pipeline.stage_index(r["kind"], r["stage"]) + 1]
            if r["kind"] == pipeline.CLIP:
                done = done[1:]
            for stage in done:
                manifest = cps.get((r["id"], stage))
                if manifest is None:
                    f.problems.append(f"{r['id']} completed {stage} without a checkpoint record")
                    continue
                for p in checkpoints.verify(items_root / r["id"] / stage, json.loads(manifest)):
                    f.problems.append(f"{r['id']} {stage}: {p}")


def torture_hosts(
    hosts: int = 3, kills: int = 12, seed: int = 7, workers: int = 2, episodes: int = 12, log=print
):
    if shutil.which("unshare") is None:
        raise SystemExit("unshare (util-linux) is needed to give each host its own namespaces")
    return MultiHostTorture(hosts, kills, seed, workers, episodes, log=log).run()
