"""The engine process: worker threads, batched heartbeats, watchdog and health.

Workers claim items with a lease and a fencing token (engine.db), run the
stage in a temporary directory, and commit the checkpoint and the new state in
one transaction that first checks the token (engine.checkpoints). Anything
that goes wrong takes the road engine.policy decides. Several engine processes
(and attached consoles) may share one workspace: every worker write is fenced.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import random
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from . import checkpoints, errors, fsafe, ownership, pipeline, policy, stages
from . import rescue as rescuing
from .alert_watch import AlertWatch
from .alerts import Alerter
from .clock import Clock
from .db import Claim, Completion, work
from .db.unit import Unit
from .errors import Cancelled, StageError
from .health import RESOURCE_PREFIX, SERVICE_PREFIX, HealthMonitor
from .loop_failures import LoopFailures
from .owners import owner_alive, owner_host, owner_id
from .stages import CancelToken, Earlier, ItemInfo, LogTail, StageContext, groups
from .verbs import finish_pending_removals
from .watchdog import Watchdog
from .workspace import Workspace

log = logging.getLogger("ewg.engine")


@dataclass(frozen=True)
class EngineEvent:
    """What the engine tells a listener (the console, the CLI): small and immutable."""

    kind: str  # claimed | succeeded | failed | released | lost | state
    item_id: str = ""
    stage: str = ""
    text: str = ""


@dataclass
class Run:
    claim: Claim
    cancel: CancelToken
    thread: threading.Thread
    slot: int
    progress: float = 0.0
    message: str = ""
    progress_at: float = 0.0
    lost: bool = False
    cancel_seen_at: float | None = None
    replaced: bool = False
    tmp: object = None


@dataclass
class Outcome:
    """A finished attempt waiting for the dispatcher's next transaction.

    A plain success carries its `completion` (batched with the others); anything else carries `apply`,
    which writes its own rows inside the transaction and returns what to do after the commit."""

    run: Run
    ctx: StageContext | None
    apply: Callable[[Unit, float], Callable[[], None]] | None = None
    touches_files: bool = False  # renames files: run inside a savepoint of its own
    completion: Completion | None = None


class Engine:
    def __init__(
        self,
        ws: Workspace,
        workers: int | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_event: Callable[[EngineEvent], None] | None = None,
        disk_free_mb: Callable[[str], float] | None = None,
    ) -> None:
        self.ws = ws
        self.config = ws.config
        self.store = ws.store
        self.clock = clock or ws.clock
        self.rng = rng or random.Random()
        self.on_event = on_event
        self.owner = owner_id()
        self.host = owner_host(self.owner)
        self.workers = self.config.engine.workers if workers is None else workers
        self.state = "new"
        self.executions = 0
        self._runs: dict[str, Run] = {}
        self._lock = threading.RLock()
        self._slots: dict[int, threading.Thread] = {}
        self._claiming = threading.Event()  # cleared: workers stop taking new work
        self._halt = threading.Event()  # set: background loops end
        self._beat_now = threading.Event()  # set: beat now, not at the next interval (a cancel came)
        self._lead_checked, self._leading = -1e18, False
        self._force = threading.Event()  # set: a force stop was asked for
        self._ready: queue.SimpleQueue[Claim] = queue.SimpleQueue()  # claimed, waiting for a worker
        self._queued: dict[str, Claim] = {}  # the same, by item (for heartbeats)
        # Finished attempts to record, and None as a wake-up call: the dispatcher blocks on this queue.
        # SimpleQueue, not Queue: its C lock wakes a thread without the Python-level Condition, whose
        # bookkeeping under the GIL cost the hot path about a fifth of its speed (bench/engine_throughput.py).
        self._outbox: queue.SimpleQueue[Outcome | None] = queue.SimpleQueue()
        self._waiting = 0  # workers waiting for a claim
        self._busy_reported = 0
        self._dispatch_failures = LoopFailures("dispatch", log)
        self._threads: list[threading.Thread] = []
        self._heartbeat_tick = time.monotonic()  # the heartbeat loop's last round (Engine.alive)
        self.health = HealthMonitor(self, disk_free_mb=disk_free_mb)
        self.watchdog = Watchdog(self)
        alerting = self.config.alerts.settings()
        self.alerts = AlertWatch(
            self.store,
            Alerter(alerting.sinks(), alerting.policy, clock=self.clock),
            self.clock,
            host=self.owner.split(":", 1)[0],
            owner=self.owner,
        )

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> Engine:
        if self.store.backend == "postgresql":  # other hosts publish into this folder too
            ownership.check_shared_root(
                self.ws.items_root, self.store.identity(), self.owner.split(":", 1)[0]
            )
        self.recover()
        self._register()
        self.alerts.prime()
        self.state = "running"
        self._claiming.set()
        self.health.sample()
        self.health.check_services(force=True)  # know which services are down before the first claim
        for name, loop in (
            ("dispatcher", self._dispatch_loop),
            ("heartbeat", self._heartbeat_loop),
            ("watchdog", self.watchdog.loop),
            ("health", self.health.loop),
            *([("alerts", self._alert_loop)] if self.alerts.alerter.enabled else []),
            *([("wake-ups", self._wakeup_loop)] if self.store.backend == "postgresql" else []),
        ):
            t = threading.Thread(target=loop, name=f"ewg-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        for slot in range(self.workers):
            self._spawn(slot)
        self.alerts.alerter.start()
        self._emit(EngineEvent("state", text="running"))
        return self

    def _spawn(self, slot: int) -> None:
        t = threading.Thread(target=self._worker_loop, args=(slot,), name=f"ewg-worker-{slot}", daemon=True)
        with self._lock:
            self._slots[slot] = t
        t.start()

    def recover(self) -> dict[str, int]:
        """Start-up repair: rescue work leased by dead processes on this host, sweep temporary leftovers."""
        now = self.clock.now()
        rescued = 0
        for item in work.running_items(self.store):
            if owner_alive(item.owner) is False:
                if self.rescue(
                    item.id,
                    item.token,
                    item.rescues,
                    "crashed",
                    f"owner {item.owner} is gone (found at start-up)",
                    now,
                ):
                    rescued += 1
        swept = self.sweep_leftovers()
        self._warn_unrecorded_outputs()
        with self.store.write() as unit:
            for owner in unit.engine_owners():
                if owner_alive(owner) is False:
                    unit.forget_engine(owner)
            if rescued or swept:
                unit.record_event(now, "engine", "recover", result=f"rescued {rescued}, swept {swept}")
        return {"rescued": rescued, "swept": swept}

    def _warn_unrecorded_outputs(self) -> None:
        """Say when finished output on disk is ahead of the database (a lost -wal, a restored backup):
        the stages would run again, and `ewg doctor --repair` can re-adopt what verifies instead."""
        from .doctor import startup_warning

        try:
            warning = startup_warning(self.ws)
        except Exception as exc:  # noqa: BLE001 - a look at the disk must never stop the engine
            log.warning("could not compare checkpoint folders with the database (%s)", exc)
            return
        if warning:
            log.warning("%s", warning)

    def rescue(
        self,
        item_id: str,
        token: int,
        rescues: int,
        outcome: str,
        why: str,
        now: float,
        actor: str = "engine",
    ) -> bool:
        """Take an item back from an owner that died (engine.rescue), and look for work when it did."""
        ok = rescuing.rescue(
            self.store, self.config, self.host, item_id, token, rescues, outcome, why, now, actor
        )
        if ok:
            self.wake()
        return ok

    def sweep_leftovers(self) -> int:
        """Delete the temporary and replaced folders of attempts that are over, only in known items'
        folders of an items root this database owns (OwnershipError otherwise: the engine does not start)."""
        self.ws.confirm_owned()
        finish_pending_removals(self.ws)
        live = work.live_leases(self.store)
        known = self.ws.known_ids()
        swept = 0
        for link in checkpoints.stale_links(
            self.ws.items_root, known
        ):  # ewg makes none; the target is left alone
            fsafe.remove_link(link)
            swept += 1
        for path, item_id, _stage, token in checkpoints.leftovers(self.ws.items_root):
            if item_id not in known or path.parent.is_symlink():  # not an item folder ewg made
                continue
            if path.name.startswith(checkpoints.TMP_PREFIX) and (item_id, token) in live:
                continue
            ownership.remove_tree(path)  # a symlink in its place is unlinked, never followed
            swept += 1
        return swept

    def stop(self, force: bool = False, grace: float | None = None) -> None:
        """Graceful: stages reach a safe point and their items are released where they were.
        Force: subprocesses are killed at once; stuck Python stages are abandoned (fenced out)."""
        if self.state in ("stopped", "new"):
            return
        if self.state == "stopping":  # a second request while stopping: upgrade to force
            if force:
                self._force.set()
                with self._lock:
                    for run in self._runs.values():
                        run.cancel.force()
            return
        if force:
            self._force.set()
        self.state = "stopping"
        self._emit(EngineEvent("state", text="stopping"))
        self._claiming.clear()
        self.wake()
        while True:  # claimed but not started: give back untouched
            try:
                claim = self._ready.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                self._queued.pop(claim.item_id, None)
            self._release_unstarted(claim)
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.cancel.cancel("shutdown")
            if force:
                run.cancel.force()
        cfg = self.config.engine
        wait = cfg.force_grace if force else (cfg.stop_grace if grace is None else grace)
        self._join_runs(wait)
        with self._lock:
            stuck = list(self._runs.values())
        for run in stuck:
            run.cancel.force()
        if stuck:
            self._join_runs(cfg.force_grace)
        with self._lock:
            stuck = list(self._runs.values())
        now = self.clock.now()
        for run in stuck:
            with self.store.write() as unit:
                unit.release(
                    run.claim.item_id,
                    run.claim.lease_token,
                    now,
                    "abandoned",
                    "queued",
                    "abandoned at shutdown: the stage ignored its cancel token",
                    bump=True,
                )
        self._halt.set()
        self._beat_now.set()  # the heartbeat loop sees the halt at once
        with self._lock:
            workers = list(self._slots.values())
        for t in self._threads + workers:  # no claim may land after stop() returns
            if t is not threading.current_thread():
                t.join(timeout=5)
        try:
            self.dispatch_once()  # record what finished during the last moments
            with self.store.write() as unit:
                unit.engine_stopped(self.owner, now)
        # Whichever driver's error (a full disk, a database gone away): the stop must still finish, and
        # what is unrecorded is fenced and rescued later.
        except Exception as exc:
            log.error("could not record the engine's stop (%s); a later start rescues its work", exc)
        self.state = "stopped"
        self._emit(EngineEvent("state", text="stopped"))
        if self.alerts.alerter.enabled:  # the last events, then the stop itself, then flush
            with contextlib.suppress(Exception):
                self.alerts.tick()
            self.alerts.engine_stopped("force stop" if self._force.is_set() else "graceful stop")
            self.alerts.alerter.stop(timeout=5)

    def _alert_loop(self) -> None:
        failures = LoopFailures("alert check", log)
        while not self._halt.wait(self.config.engine.check_interval):
            try:
                self.alerts.tick()
                failures.ok()
            except Exception as exc:  # a broken alert path must never stop the engine
                failures.failed(exc)

    def _join_runs(self, seconds: float) -> None:
        deadline = self.clock.now() + seconds
        while self.clock.now() < deadline:
            if self._force.is_set() and seconds > self.config.engine.force_grace:
                deadline = min(deadline, self.clock.now() + self.config.engine.force_grace)
                seconds = self.config.engine.force_grace
            with self._lock:
                if not self._runs:
                    return
            self._halt.wait(0.05)

    def busy(self) -> int:
        with self._lock:
            return len(self._runs)

    def runs_here(self, item_id: str) -> bool:
        with self._lock:
            return item_id in self._runs

    def halted(self, seconds: float) -> bool:
        """Wait up to `seconds` for the background loops to be told to end; True once they are."""
        return self._halt.wait(seconds)

    def idle(self) -> bool:
        """Nothing pending, running or waiting for a retry or a resource. Items failed, stopped, or
        blocked by a service that is down wait for a person and do not count."""
        # Known from memory first (run_until_idle may poll every few ms): a run stays in _runs until its
        # outcome is recorded, and a claim waits in _ready until a worker takes it.
        if self.busy() or not self._ready.empty():
            return False
        pending = work.pending_work(self.store, RESOURCE_PREFIX)
        return pending == 0 and self.busy() == 0 and self._ready.empty()

    def run_until_idle(self, timeout: float | None = None, poll: float = 0.2) -> bool:
        deadline = None if timeout is None else self.clock.now() + timeout
        while not self._halt.is_set():
            if self.idle():
                return True
            if deadline is not None and self.clock.now() > deadline:
                return False
            self._halt.wait(poll)
        return self.idle()

    def wake(self) -> None:
        """Have the dispatcher look for work now (its queue doubles as its wake-up call)."""
        self._outbox.put(None)

    def leads(self) -> bool:
        """This engine runs the once-per-site maintenance (scans, pruning, backups, rescues of other
        hosts' work). Always on one host; on PostgreSQL one host at a time holds the lead, and it moves
        when that host dies or stops beating for dead_after. Asked at most once a second."""
        mono = time.monotonic()
        if mono - self._lead_checked >= 1.0:
            self._lead_checked = mono
            self._leading = self.store.try_lead(self.owner, self.config.engine.dead_after, self.clock.now())
        return self._leading

    def _wakeup_loop(self) -> None:
        """Wake-ups from other hosts (LISTEN/NOTIFY): new work or a verb makes the dispatcher look now
        and the heartbeat read cancel requests at once instead of at its next interval. Polling stays
        the fallback."""
        while not self._halt.is_set():
            if self.store.wait(1.0):  # any change from another host: work to claim or a cancel to read
                self.wake()
                self._beat_now.set()

    def _emit(self, event: EngineEvent) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a listener must never break the engine
                log.exception("engine event listener failed")

    def _register(self) -> None:
        now = self.clock.now()
        host, pid, _ = self.owner.rsplit(":", 2)
        with self.store.write() as unit:
            unit.register_engine(self.owner, host, int(pid), now, self.workers)

    # -- workers and the dispatcher ------------------------------------------------------
    # Workers only run stages. One dispatcher thread does the hot-path writes: in a single
    # transaction it commits every finished attempt (each fenced by its token; one that renames
    # files in a savepoint, so its failure cannot spoil the others) and claims work for idle workers.
    # Batching is what makes the engine faster than a one-commit-per-task queue.
    def claiming_allowed(self) -> bool:
        return self._claiming.is_set() and self.health.resource_pause is None and self.health.room_to_claim()

    def running_stages(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(run.claim.kind, run.claim.stage) for run in self._runs.values()]

    def _worker_loop(self, slot: int) -> None:
        me = threading.current_thread()
        poll = self.config.engine.poll_interval
        while not self._halt.is_set():
            with self._lock:
                if self._slots.get(slot) is not me:
                    return  # this slot was given to a new thread
                self._waiting += 1
            self.wake()
            try:
                claim = self._ready.get(timeout=poll)
            except queue.Empty:
                claim = None
            with self._lock:
                self._waiting -= 1
                if claim is not None:
                    self._queued.pop(claim.item_id, None)
            if claim is None:
                if self.state in ("stopping", "stopped"):
                    return
                continue
            if self.state != "running":  # claimed just before a stop: give it back untouched
                self._release_unstarted(claim)
                continue
            self._execute(claim, slot)

    def _dispatch_loop(self) -> None:
        poll = self.config.engine.poll_interval
        while not self._halt.is_set():
            try:
                first = self._outbox.get(timeout=poll)  # an outcome, or None for a wake-up call
            except queue.Empty:
                first = None
            try:
                self.dispatch_once(first)
                self._dispatch_failures.ok()
            except Exception as exc:
                resource = self._dispatch_failures.failed(exc) == errors.RESOURCE
                # A full disk does not empty in a poll interval: wait for the next health sample.
                self._halt.wait(self.config.health.interval if resource else poll)

    def dispatch_once(self, first: Outcome | None = None) -> int:
        """Commit finished attempts and claim work for idle workers, in one transaction."""
        outcomes = [first] if first is not None else []
        while True:
            try:
                outcome = self._outbox.get_nowait()
            except queue.Empty:
                break
            if outcome is not None:
                outcomes.append(outcome)
        want = 0
        if self.claiming_allowed() and self.state == "running":
            with self._lock:
                # Only for workers waiting now: a claim that waits in a queue holds a lease for nothing,
                # and a kill would orphan it.
                want = self._waiting - self._ready.qsize()
        if not outcomes and want <= 0:
            return 0
        now = self.clock.now()
        posts: list[Callable[[], None]] = []
        claims = []
        try:
            with self.store.write() as unit:
                batch = [o for o in outcomes if o.completion is not None]
                if batch:  # plain successes: a few multi-row statements for all
                    accepted = self.store.complete_batch(unit, [o.completion for o in batch], now)
                    posts += [self._recorded(o.run, o.ctx, o.run.claim.item_id in accepted) for o in batch]
                for o in outcomes:
                    if o.apply is None:
                        continue
                    if not o.touches_files:  # plain SQL: nothing here can fail on its own
                        posts.append(o.apply(unit, now))
                        continue
                    try:
                        with unit.savepoint():
                            posts.append(o.apply(unit, now))
                    except Exception as exc:  # e.g. the rename of a checkpoint failed: a failed attempt
                        posts.append(lambda o=o, exc=exc: self._on_failure(o.run, exc, o.ctx))
                if want > 0:
                    claims = self.store.claim_batch(
                        unit,
                        self.owner,
                        now,
                        self.config.engine.lease_duration,
                        sorted(self.health.held_stages),
                        want,
                    )
        except Exception as exc:
            for outcome in outcomes:  # nothing was recorded: try again (fenced, so never twice)
                self._outbox.put(outcome)
            if errors.classify(exc).error_class == errors.RESOURCE:  # the database's disk is full
                self.health.hold(f"database write failed: {exc}")
            raise
        with self._lock:
            for claim in claims:
                self._queued[claim.item_id] = claim
        for claim in claims:
            self._ready.put(claim)
        for post in posts:
            try:
                post()
            except Exception:
                log.exception("after-commit step failed")
        return len(outcomes) + len(claims)

    def _submit(
        self,
        run: Run,
        ctx: StageContext | None,
        apply: Callable[[Unit, float], Callable[[], None]] | None = None,
        touches_files: bool = False,
        completion: Completion | None = None,
    ) -> None:
        self._outbox.put(Outcome(run, ctx, apply, touches_files, completion))  # wakes the dispatcher

    def _recorded(self, run: Run, ctx: StageContext, accepted: bool) -> Callable[[], None]:
        """What follows the commit of a success: count it and free the item, or say the result was lost."""
        claim = run.claim
        if not accepted:
            return lambda: self._finish(
                run, ctx, EngineEvent("lost", claim.item_id, claim.stage, "lease lost: result discarded")
            )

        def post() -> None:
            with self._lock:
                self.executions += 1
            self._finish(run, ctx, EngineEvent("succeeded", claim.item_id, claim.stage))

        return post

    def _finish(self, run: Run, ctx: StageContext | None, event: EngineEvent) -> None:
        """After the outcome is recorded (or refused): clean up, free the item, tell listeners."""
        if ctx is not None and ctx.output_created:
            checkpoints.discard(ctx.output_path)  # gone already when it was published
        with self._lock:
            if self._runs.get(run.claim.item_id) is run:
                del self._runs[run.claim.item_id]
        self._emit(event)  # no wake-up call: the freed worker sends one when it waits for work

    def _release_unstarted(self, claim: Claim) -> None:
        run = Run(claim, CancelToken(), threading.current_thread(), -1, progress_at=claim.started_at)
        with self._lock:
            self._runs[claim.item_id] = run
        self._on_cancelled(run, "shutdown", None)

    def _execute(self, claim: Claim, slot: int) -> None:
        now = self.clock.now()
        run = Run(claim, CancelToken(), threading.current_thread(), slot, progress_at=now)
        with self._lock:
            self._runs[claim.item_id] = run
        if self.on_event is not None:  # no event object per claim when nobody listens
            self._emit(EngineEvent("claimed", claim.item_id, claim.stage))
        ctx: StageContext | None = None
        try:
            try:
                ctx = self._context(claim, run)
                impl = stages.resolve(
                    claim.kind, claim.stage, ctx.stage_config, nice=self.config.engine.worker_nice
                )
                if ctx.stage_config.kind != "demo" and (
                    self.config.demo.faults or self.config.demo.pace or self.config.demo.transient_probability
                ):
                    impl = stages.with_chaos(impl)
                impl(ctx)
                self._complete(run, ctx)
            except Cancelled as exc:
                self._on_cancelled(run, exc.reason, ctx)
            except BaseException as exc:  # noqa: BLE001 - a stage may raise anything; it must not kill the worker
                if (
                    run.cancel.is_set()
                ):  # whatever broke after a cancel (a killed pipe, a closed file) is the cancel
                    self._on_cancelled(run, run.cancel.reason or "stop", ctx)
                else:
                    self._on_failure(run, exc, ctx)
        except Exception:  # recording the outcome failed: free the slot; the lease expires
            log.exception("could not record the outcome of %s %s", claim.item_id, claim.stage)
            self._finish(run, ctx, EngineEvent("lost", claim.item_id, claim.stage, "outcome not recorded"))

    def _context(self, claim: Claim, run: Run) -> StageContext:
        item_dir = self.ws.item_dir(claim.item_id)
        tmp = checkpoints.temp_path(item_dir, claim.stage, claim.lease_token)
        logger = logging.Logger(f"ewg.{claim.item_id}.{claim.stage}")  # not registered: no leak per item
        tail = LogTail()
        logger.addHandler(tail)

        def progress(fraction: float, message: str) -> None:
            if fraction != run.progress or message != run.message:
                run.progress, run.message, run.progress_at = fraction, message, self.clock.now()

        def earlier() -> tuple[int, dict, dict]:
            previous, fresh, parent_fresh = self.store.earlier_work(claim)
            parent = (
                self._inputs(claim.parent_id, pipeline.EPISODE, pipeline.EPISODE_STAGES[-1], parent_fresh)
                if claim.parent_id
                else {}
            )
            return previous, self._inputs(claim.item_id, claim.kind, claim.completed, fresh), parent

        return StageContext(
            item=ItemInfo(
                claim.item_id,
                claim.kind,
                claim.source,
                claim.show,
                claim.title,
                claim.parent_id,
                claim.clip_start,
                claim.clip_end,
            ),
            stage=claim.stage,
            attempt=claim.attempt_number,
            earlier=Earlier(earlier),
            output_path=tmp,
            cache_dir=item_dir / "cache",
            item_dir=item_dir,
            workspace=self.ws.root,
            stage_config=self.config.stage(claim.kind, claim.stage),
            config=self.config,
            cancel=run.cancel,
            logger=logger,
            log_tail=tail,
            clock_now=self.clock.now,
            _progress=progress,
            lease_marker=groups.lease_marker(self.owner, claim.item_id, claim.lease_token),
            _record_process=lambda pid, pgid: self._record_process(claim, pid, pgid),
        )

    def _record_process(self, claim: Claim, pid: int, pgid: int) -> None:
        """A stage's process group, written with its lease (fenced), before the stage goes on; a stage
        that cannot be recorded is not run: a crash would leave it running alongside its retry."""
        try:
            with self.store.write() as unit:
                unit.record_stage_process(claim.item_id, claim.lease_token, pid, pgid)
        except BaseException:
            groups.end_group(pgid, 0)
            raise

    def _inputs(self, item_id: str, kind: str, completed: str | None, fresh: set[str]) -> dict:
        order = pipeline.stages_of(kind)
        done = order[: pipeline.stage_index(kind, completed) + 1]
        return {s: self.ws.item_dir(item_id) / s for s in done if s in fresh}

    def _complete(self, run: Run, ctx: StageContext) -> None:
        claim = run.claim
        if ctx.output_created or claim.had_checkpoint:  # hashing and fsync: in the worker
            prepared = checkpoints.prepare(
                ctx.output_path if ctx.output_created else None, ctx.item_dir / claim.stage
            )
            manifest = json.dumps(prepared.manifest)
        else:  # wrote nothing, and nothing older to replace
            prepared, manifest = None, checkpoints.EMPTY_MANIFEST
        completion = Completion(
            claim.item_id,
            claim.lease_token,
            claim.stage,
            pipeline.next_stage(claim.kind, claim.stage),
            manifest,
            ctx.log_tail.text(),
            claim.attempt_number,
            self.owner,
            claim.started_at,
        )
        # File work (and a savepoint) only where there is something to rename: outputs to publish, or the
        # folder of an earlier checkpoint of this stage to replace. Most no-output stages need neither,
        # and are committed together with the other plain successes of the dispatcher's transaction.
        touches = prepared is not None and (not prepared.empty or claim.had_checkpoint)
        settles_clips = bool(ctx.clips) or (claim.kind == pipeline.EPISODE and claim.stage == "editorial")
        if not touches and not settles_clips:
            self._submit(run, ctx, completion=completion)
            return

        def apply(unit: Unit, now: float) -> Callable[[], None]:
            accepted = bool(self.store.complete_batch(unit, [completion], now))
            if accepted:
                if prepared is not None and touches:
                    checkpoints.publish(prepared, claim.lease_token)  # renamed while the token is checked
                if settles_clips:
                    unit.upsert_clips(self._clip_batch(ctx), now)
            return self._recorded(run, ctx, accepted)

        self._submit(run, ctx, apply, touches_files=touches)

    @staticmethod
    def _clip_batch(ctx: StageContext) -> work.ClipBatch:
        """The clips an editorial run picked, keyed by episode and clip key (engine.db.work.upsert_clips).
        Clips an operator verb set waiting for this rerun (pipeline.AWAITS_EDITORIAL) are redone from
        generated when picked again, and discarded (kept, hidden) when the new run no longer picks them."""
        return work.ClipBatch(
            episode_id=ctx.item.id,
            source=ctx.item.source,
            show=ctx.item.show,
            kind=pipeline.CLIP,
            first_stage="discovered",
            next_stage="generated",
            target_stage=pipeline.CLIP_STAGES[-1],
            waiting_reason=pipeline.AWAITS_EDITORIAL,
            dropped_reason="dropped: the episode's editorial rerun no longer picks this clip",
            clips=tuple(
                work.ClipCut(f"{ctx.item.id}__{clip.key}", clip.title, clip.start, clip.end)
                for clip in ctx.clips
            ),
        )

    def _on_failure(self, run: Run, exc: BaseException, ctx: StageContext | None) -> None:
        claim = run.claim
        if run.lost:
            self._finish(
                run, ctx, EngineEvent("lost", claim.item_id, claim.stage, "lease lost: failure discarded")
            )
            return
        classification = errors.classify(exc, self.config.error_rules_for(claim.kind, claim.stage))
        if isinstance(exc, StageError):  # expected: its message says it all, a traceback would only bury it
            message, detail = exc.message, exc.detail or exc.message
        else:  # unexpected: keep where it came from
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            detail = "".join(traceback.format_exception(exc)[-6:])
        service_down = None
        if classification.error_class == errors.TRANSIENT:
            service_down = self.health.down_service_for(claim.kind, claim.stage, recheck=True)
        now = self.clock.now()
        decision = policy.after_failure(
            self.config, classification.error_class, claim.attempt_number - 1, now, self.rng, service_down
        )
        if classification.error_class == errors.CACHE_RELATED:
            ownership.remove_in_item(self.ws.item_dir(claim.item_id), ["cache"])  # never through a link
        if classification.error_class == errors.RESOURCE:
            self.health.hold(message)
        if ctx is not None and not self.config.recovery.auto_cleanup_failed_files and ctx.output_created:
            keep = ctx.item_dir / f".failed-{claim.stage}-{claim.lease_token}"
            checkpoints.discard(keep)
            os.rename(ctx.output_path, keep)
            checkpoints.rotate_failed(ctx.item_dir, self.config.recovery.keep_failed_outputs)
        blocked_reason = None
        if service_down:
            blocked_reason = (
                f"{SERVICE_PREFIX}{service_down} is down ({self.health.down.get(service_down, '')})"
            )
        elif classification.error_class == errors.RESOURCE:
            blocked_reason = f"{RESOURCE_PREFIX}{message}"
        text = f"{decision.text} [{classification.reason}]"
        decision = policy.Decision(
            decision.status, decision.attempts, decision.spent, decision.next_attempt_at, text
        )
        tail = ctx.log_tail.text() if ctx else None

        def apply(unit: Unit, _now: float) -> Callable[[], None]:
            ok = unit.settle_failure(
                claim.item_id,
                claim.lease_token,
                now,
                "failed",
                decision,
                classification.error_class,
                message,
                detail,
                classification.suggestion,
                blocked_reason=blocked_reason,
                log_tail=tail,
            )
            if ok:
                unit.record_event(
                    now,
                    "engine",
                    "attempt_failed",
                    affected=[claim.item_id],
                    selection=claim.stage,
                    reason=message,
                    result=text,
                )
            return lambda: self._finish(
                run, ctx, EngineEvent("failed" if ok else "lost", claim.item_id, claim.stage, text)
            )

        self._submit(run, ctx, apply)

    def _on_cancelled(self, run: Run, reason: str, ctx: StageContext | None) -> None:
        claim = run.claim
        if run.lost or reason == "lost":
            self._finish(run, ctx, EngineEvent("lost", claim.item_id, claim.stage, "lease lost: stopped"))
            return
        tail = ctx.log_tail.text() if ctx else None

        def apply(unit: Unit, now: float) -> Callable[[], None]:
            if reason in ("timeout", "stall"):
                seconds = now - claim.started_at
                verdict = "TIMED OUT" if reason == "timeout" else "STALLED"
                message = (
                    f"timed out after {seconds:.0f} s"
                    if reason == "timeout"
                    else f"stalled: no progress for {self.config.stall_after_for(claim.kind, claim.stage):.0f} s"
                )
                decision = policy.after_failure(
                    self.config, errors.TRANSIENT, claim.attempt_number - 1, now, self.rng
                )
                ok = unit.settle_failure(
                    claim.item_id,
                    claim.lease_token,
                    now,
                    "timed_out" if reason == "timeout" else "stalled",
                    decision,
                    errors.TRANSIENT,
                    message,
                    "",
                    errors.SUGGESTIONS[errors.TRANSIENT],
                    verdict=verdict,
                    log_tail=tail,
                )
                text = decision.text
            elif reason in ("shutdown", "release", "force_release"):
                text = (
                    "engine stopped: released at a safe point, resumes at next start"
                    if reason == "shutdown"
                    else "processing stopped by operator: released at a safe point, resumes on unpause"
                )
                ok = unit.release(
                    claim.item_id, claim.lease_token, now, "cancelled", "queued", text, log_tail=tail
                )
            else:  # stop / force from an operator
                text = "stopped by operator"
                ok = unit.release(
                    claim.item_id, claim.lease_token, now, "cancelled", "stopped", text, log_tail=tail
                )
            return lambda: self._finish(
                run, ctx, EngineEvent("released" if ok else "lost", claim.item_id, claim.stage, text)
            )

        self._submit(run, ctx, apply)

    # -- heartbeats ------------------------------------------------------------------------
    def alive(self) -> bool:
        """The engine is running and its loops turn: every loop thread is alive and the heartbeat loop
        went round within three intervals (a frozen process fails this; a full disk does not)."""
        if self.state != "running" or not all(t.is_alive() for t in self._threads):
            return False
        return time.monotonic() - self._heartbeat_tick < 3 * self.config.engine.heartbeat_interval + 1

    def _heartbeat_loop(self) -> None:
        failures = LoopFailures("heartbeat", log)
        while True:
            self._beat_now.wait(self.config.engine.heartbeat_interval)  # or sooner: a cancel request came
            self._beat_now.clear()
            if self._halt.is_set():
                return
            self._heartbeat_tick = time.monotonic()
            try:
                self.beat()
                failures.ok()
            except Exception as exc:
                failures.failed(exc)

    def beat(self) -> None:
        """Extend every lease this process holds in one transaction and pick up cancel requests."""
        now = self.clock.now()
        with self._lock:
            runs = {r.claim.item_id: r for r in self._runs.values() if not r.lost}
            queued = list(self._queued.values())
        beats = [
            (r.claim.item_id, r.claim.lease_token, r.progress, r.message, r.progress_at)
            for r in runs.values()
        ]
        beats += [(c.item_id, c.lease_token, 0.0, "", c.started_at) for c in queued if c.item_id not in runs]
        answers = self.store.heartbeat(beats, now, self.config.engine.lease_duration)
        for item_id, answer in answers.items():
            run = runs.get(item_id)
            if run is None:
                continue  # a claim waiting for its worker: the worker sees the cancel at start
            if answer == "LOST":
                run.lost = True
                run.cancel.cancel("lost")
                run.cancel.force()
                run.cancel_seen_at = run.cancel_seen_at or now
            elif answer and run.cancel_seen_at is None:
                self.cancel_local(item_id, answer)
        self._supervise(now)
        with self.store.write() as unit:
            unit.engine_beat(
                self.owner,
                now,
                busy=len(runs),
                workers=self.workers,
                state=self.state,
                executions=self.executions,
            )
            if self.store.busy_waits != self._busy_reported:  # tell consoles and `ewg status`
                self._busy_reported = self.store.busy_waits
                unit.set_switch(
                    "db_busy",
                    str(self.store.busy_waits),
                    reason=self.store.busy_reason,
                    actor=self.owner,
                    now=self.store.last_busy_at or now,
                )

    def cancel_local(self, item_id: str, reason: str) -> None:
        with self._lock:
            run = self._runs.get(item_id)
        if run is None:
            return
        run.cancel.cancel(reason)
        run.cancel_seen_at = run.cancel_seen_at or self.clock.now()
        if reason in ("force", "force_release"):
            run.cancel.force()

    def _supervise(self, now: float) -> None:
        """Give a worker slot a new thread when its stage ignores cancellation past the grace period."""
        grace = self.config.engine.force_grace
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            if run.replaced or run.cancel_seen_at is None or now - run.cancel_seen_at < grace:
                continue
            if run.cancel.reason == "shutdown":
                continue
            if run.cancel.reason in ("force", "force_release") and not run.lost:
                self.watchdog.abandon_item(run.claim.item_id, run.claim.lease_token, run.cancel.reason, now)
                run.lost = True
            if not run.lost:
                continue
            run.replaced = True
            with self._lock:
                self._runs.pop(run.claim.item_id, None)
            log.warning(
                "abandoning stuck stage %s of %s; worker slot %d gets a new thread",
                run.claim.stage,
                run.claim.item_id,
                run.slot,
            )
            self._spawn(run.slot)
