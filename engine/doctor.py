"""`ewg doctor [--repair]`: diagnose a workspace, and repair what is safe to repair.

Each finding says what was found, how bad it is and the fix. The checks, in
order: the configuration, the database (present, readable, schema version,
`PRAGMA integrity_check`), paths another user can write or owns (what ewg
refuses to run on; not repaired: only the owner can judge their content, and no
python stage a config of theirs names is imported), file permissions, engine
processes, leases and their owners (alive or dead), symbolic links in the items
folder, temporary leftovers, checkpoints (files present, sizes and checksums as
in their manifest), checkpoint folders whose commit was lost (ARCHITECTURE.md
contract 7), disk space, services, the dependencies of every configured stage,
and the backups with the way back.

`repair=True` fixes only what cannot lose work: temporary leftovers of dead
attempts are swept, leases of dead processes on this host are rescued (the
item goes back to the queue, no attempt spent), damaged checkpoints are marked
stale and their items rolled back to before the damage (through the rollback
and reprocess verbs, so the audit log has them), verified output whose commit
was lost is re-adopted, owner-only permissions are restored, symbolic links in
place of ewg's item folders removed (never their targets). Nothing is deleted in
an items folder whose ownership marker does not name this database
(engine/ownership.py): that is reported, with the reason. Each repair writes an
audit event (actor: the OS user). A database
that cannot be opened is reported with the way back from a backup, never
touched and never recreated.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import checkpoints, fsafe, ownership, pipeline
from .config import Config, ConfigError
from .config import load as load_config
from .db import (
    DatabaseError,
    DatabasePathError,
    SQLiteStore,
    check_access,
    check_regular_file,
    sqlite_file,
    upkeep,
)
from .db.sqlite import SCHEMA_VERSION
from .health import check_service, disk_free_mb
from .text import one_line
from .workspace import CONFIG_NAME, Workspace, database_url, exposures

OK, INFO, WARNING, ERROR, CRITICAL = "ok", "info", "warning", "error", "critical"
SEVERITIES = (OK, INFO, WARNING, ERROR, CRITICAL)
PROBLEM = (WARNING, ERROR, CRITICAL)


@dataclass
class Finding:
    check: str  # config | database | schema | integrity | permissions | engines | leases | ...
    severity: str
    what: str
    fix: str = ""
    repaired: str = ""  # what --repair did about it ("" = nothing)
    items: list[str] = field(default_factory=list)

    @property
    def open(self) -> bool:
        """A problem that is still there after this run."""
        return self.severity in PROBLEM and not self.repaired


@dataclass
class Report:
    root: Path
    repair: bool
    findings: list[Finding] = field(default_factory=list)
    backups: list[dict] = field(default_factory=list)

    def add(
        self, check: str, severity: str, what: str, fix: str = "", items: list[str] | None = None
    ) -> Finding:
        finding = Finding(check, severity, what, fix, items=list(items or []))
        self.findings.append(finding)
        return finding

    @property
    def healthy(self) -> bool:
        return not any(f.open for f in self.findings)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.open]

    def to_dict(self) -> dict:
        return {
            "workspace": str(self.root),
            "repair": self.repair,
            "healthy": self.healthy,
            "findings": [asdict(f) for f in self.findings],
            "backups": self.backups,
        }

    def text(self) -> str:
        marks = {OK: "ok  ", INFO: "info", WARNING: "WARN", ERROR: "ERR ", CRITICAL: "CRIT"}
        lines = [f"ewg doctor: {one_line(self.root)}" + (" (repair)" if self.repair else "")]
        for f in self.findings:  # one_line: a folder name holding a newline must not forge a finding
            lines.append(f"  [{marks[f.severity]}] {f.check}: {one_line(f.what)}")
            if f.repaired:
                lines.append(f"         repaired: {one_line(f.repaired)}")
            elif f.fix and f.severity != OK:
                for n, part in enumerate(f.fix.split("\n")):
                    lines.append(("         fix: " if n == 0 else "              ") + one_line(part))
        left = self.problems
        if not left:
            lines.append(
                "Healthy: nothing needs doing."
                if not any(f.repaired for f in self.findings)
                else "Healthy after repair (recorded in the audit log: `ewg log`)."
            )
        else:
            worst = max(left, key=lambda f: SEVERITIES.index(f.severity)).severity
            lines.append(
                f"{len(left)} problem(s) remain (worst: {worst})."
                + ("" if self.repair else " `ewg doctor --repair` fixes the ones marked safe to repair.")
            )
        return "\n".join(lines)


# -- helpers ---------------------------------------------------------------------------------------
def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def inspect_backup(path: Path) -> dict:
    """Schema version and integrity of one backup file, read-only."""
    st = path.stat()
    found = sqlite_file.inspect(path, count_items=True)
    return {
        "file": str(path),
        "size": st.st_size,
        "modified": st.st_mtime,
        "schema_version": found.schema_version,
        "integrity": "ok" if found.intact else found.problem,
        "items": found.items,
        "usable": found.intact and 0 < (found.schema_version or 0) <= SCHEMA_VERSION,
    }


def list_backups(folder: Path) -> list[dict]:
    if not folder.is_dir():
        return []
    found = [inspect_backup(p) for p in folder.glob("ewg-*.db") if p.is_file()]
    return sorted(found, key=lambda b: b["modified"], reverse=True)


def way_back(db: Path, backups: list[dict], backups_folder: Path) -> str:
    """The commands that put the newest usable backup in place of a damaged database."""
    good = [b for b in backups if b["usable"]]
    if not good:
        where = backups_folder if backups_folder.is_dir() else f"{backups_folder} (it does not exist)"
        return (
            f"No usable backup in {where}. Keep the damaged file (do not delete it): copy it away and try "
            f"`sqlite3 {db.name} .recover | sqlite3 recovered.db`, or start a new workspace with `ewg init` "
            "and add the sources again (`ewg scan`); checkpoints on disk are redone."
        )
    b = good[0]
    return "\n".join(
        [
            "1. Stop every ewg process using this workspace (the console and `ewg run`).",
            f"2. Keep the damaged files: mv {db} {db}.damaged; mv {db}-wal {db}.damaged-wal; "
            f"mv {db}-shm {db}.damaged-shm (the last two may not exist).",
            f"3. Put the newest good backup in place (-p keeps it owner-only): cp -p {b['file']} {db}  (taken {_stamp(b['modified'])}, "
            f"{b['items']} items).",
            "4. Run `ewg doctor --repair`, then start ewg: work finished after the backup was taken is redone "
            "(its stages run again and overwrite their checkpoints); nothing else is lost.",
        ]
    )


def _owner_only(path: Path) -> bool:
    return not (path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def _os_user() -> str:
    from .verbs import _os_user as user

    return user()


# -- output on disk whose commit is gone (a lost -wal, a restored backup) ------------------------------
# The editorial stage declares an episode's clips, and they are recorded only in its commit: adopting it
# from disk would leave the episode past editorial with no clips, so it and what follows run again.
NOT_ADOPTABLE = {(pipeline.EPISODE, "editorial")}


@dataclass
class Unrecorded:
    """Checkpoint folders of one item beyond the stage its database row records as completed."""

    item_id: str
    kind: str
    recorded: str | None  # the item's `stage` in the database
    stages: list[str]  # stages whose output is on disk, in order from the one after `recorded`
    manifests: dict[str, dict]
    adoptable: list[str]  # the leading stages that may be re-adopted (they verify, in order)
    note: str = ""  # why the rest are not adoptable


@dataclass
class DiskCheck:
    unrecorded: list[Unrecorded] = field(default_factory=list)
    corrupt: list[tuple[str, str, str]] = field(default_factory=list)  # (item, stage, problem)
    unverified: list[tuple[str, str, str]] = field(default_factory=list)  # on disk, but does not verify


def _item_folders(root: Path) -> set[str]:
    try:
        with os.scandir(root) as entries:
            return {e.name for e in entries if e.is_dir(follow_symlinks=False)}
    except OSError:
        return set()


def unrecorded_outputs(ws: Workspace, full: bool = True) -> DiskCheck:
    """Compare published checkpoint folders with what the database records.

    A lost WAL (a database copied without its -wal, a restore from a backup, a disk that lied about
    fsync) loses a suffix of commits, while the folders those commits published stay on disk. Such an
    item's row says stage S, yet `<item>/<S+1>/manifest.json` exists, verifies, is newer than the
    item's last recorded checkpoint, and has no checkpoint record (or only an older one). Stale records
    (a rollback on purpose) and folders older than the item's last recorded change (a clip cut again)
    are not counted. `full` verifies checksums (doctor); without it only sizes are compared (start-up,
    one stat per unfinished item)."""
    from .owners import owner_alive

    check = DiskCheck()
    store = ws.store
    on_disk = _item_folders(ws.items_root)  # one listing: most unfinished items have no folder yet
    for item in upkeep.item_places(store, unfinished_only=True):
        if ws.item_dir(item.id).name not in on_disk:
            continue
        if item.status == "running" and owner_alive(item.lease_owner) is not False:
            continue  # a live attempt may be between its rename and its commit
        kind, recorded = item.kind, item.stage
        later = pipeline.later_stages(kind, recorded)
        item_dir = ws.item_dir(item.id)
        if not later or not (item_dir / later[0] / checkpoints.MANIFEST).is_file():
            continue
        records = {r.stage: r for r in upkeep.checkpoint_records(store, item_id=item.id)}
        done = set(pipeline.stages_of(kind)[: pipeline.stage_index(kind, recorded) + 1])
        since = max([item.created_at] + [r.created_at for s, r in records.items() if s in done])
        found = Unrecorded(item.id, kind, recorded, [], {}, [])
        for stage in later:
            folder = item_dir / stage
            try:
                manifest = checkpoints.read_manifest(folder)
            except checkpoints.ManifestError as exc:
                check.corrupt.append((item.id, stage, f"{folder / checkpoints.MANIFEST}: {exc}"))
                break
            if manifest is None:
                break
            record = records.get(stage)
            if record is not None and record.stale:
                break  # rolled back on purpose: the folder waits to be replaced
            if record is not None:
                try:
                    if checkpoints.parse_manifest(record.manifest)["files"] == manifest["files"]:
                        break  # recorded already (the item row is behind its record: not a lost commit)
                except checkpoints.ManifestError:
                    pass
            if (folder / checkpoints.MANIFEST).stat().st_mtime <= since:
                break  # older than the item's last recorded checkpoint: not output of a lost commit
            ok = (
                (not checkpoints.verify(folder, manifest))
                if full
                else checkpoints.sizes_match(folder, manifest)
            )
            if not ok:
                problems = (
                    checkpoints.verify(folder, manifest) if full else ["sizes differ from its manifest"]
                )
                check.unverified.append((item.id, stage, "; ".join(problems[:2])))
                break
            found.stages.append(stage)
            found.manifests[stage] = manifest
        if not found.stages:
            continue
        for stage in found.stages:
            if (kind, stage) in NOT_ADOPTABLE:
                found.note = f"{stage} and later run again: the clips {stage} declared were recorded only in its lost commit"
                break
            found.adoptable.append(stage)
        check.unrecorded.append(found)
    return check


def startup_warning(ws: Workspace) -> str:
    """One line for the engine's log when output on disk is ahead of the database ("" when it is not)."""
    check = unrecorded_outputs(ws, full=False)
    if not check.unrecorded and not check.corrupt:
        return ""
    parts = []
    if check.unrecorded:
        ids = [u.item_id for u in check.unrecorded]
        parts.append(
            f"{len(ids)} item(s) have completed output on disk that the database does not record "
            f"(a lost -wal file, a restored backup, or a kill just before a commit): {', '.join(ids[:3])}{' ...' if len(ids) > 3 else ''}; "
            "they run those stages again unless you stop ewg and run `ewg doctor --repair`, which re-adopts "
            "the outputs that verify"
        )
    if check.corrupt:
        parts.append(
            f"{len(check.corrupt)} checkpoint manifest(s) on disk are corrupt (`ewg doctor` lists them)"
        )
    return "; ".join(parts) + "."


# -- the checks ------------------------------------------------------------------------------------
class Doctor:
    def __init__(
        self,
        root: Path,
        repair: bool = False,
        actor: str | None = None,
        probe: Callable[[str, float, int], tuple[bool, str]] = check_service,
        disk_free: Callable[[str], float] = disk_free_mb,
    ) -> None:
        self.root = Path(root)
        self.report = Report(self.root, repair)
        self.repair = repair
        self.actor = actor or _os_user()
        self.probe = probe
        self.disk_free = disk_free
        self.config: Config | None = None
        self.ws: Workspace | None = None
        self.exposed = False  # another user can write the workspace: nothing its config names is imported
        self.identity: str | None = None  # the database's workspace identity, once it passed its checks

    def run(self) -> Report:
        try:
            self._config()
            cfg = self.config or Config()
            url = self._database_url(cfg)
            if url is not None:
                return self._run_postgresql(url, cfg)
            db = self.root / cfg.paths.database
            backups_folder = self.root / cfg.paths.backups
            self.report.backups = list_backups(backups_folder)
            readable = self._database(db, backups_folder)
            self._exposures()
            if readable:
                self._permissions(db, backups_folder)
                self._open(db, cfg)
                self._engines()
                self._leases()
                self._leftovers()
                self._checkpoints()
                self._unrecorded()
            self._disk(db, cfg)
            if self.config is not None:
                self._services()
                if not self.exposed:
                    self._dependencies()
            self._backups(db, backups_folder)
        finally:
            if self.ws is not None:
                self.ws.close()
        return self.report

    def _database_url(self, cfg: Config) -> str | None:
        try:
            return database_url(cfg)
        except ConfigError as exc:
            self.report.add("database", CRITICAL, str(exc).split("; ")[0], str(exc).split("; ", 1)[-1])
            return None

    def _run_postgresql(self, url: str, cfg: Config) -> Report:
        """A server's database: reachable, its schema, stale hosts; then the checks of the items folder
        that every host shares. Its backups are the server's own (pg_dump, base backups)."""
        self._exposures()
        if self._postgresql(url, cfg):
            self._engines()
            self._stale_hosts(cfg)
            self._leases()
            self._leftovers()
            self._checkpoints()
            self._unrecorded()
        self._disk(None, cfg)
        if self.config is not None:
            self._services()
            if not self.exposed:
                self._dependencies()
        self.report.add(
            "backups",
            INFO,
            "the database is on a PostgreSQL server: ewg takes no copies of it",
            "Back it up with the server's tools (pg_dump, or base backups with WAL archiving).",
        )
        return self.report

    def _postgresql(self, url: str, cfg: Config) -> bool:
        from .clock import SystemClock
        from .db import postgres_schema
        from .db.postgres import PostgresStore, redact

        try:
            store = PostgresStore.open(url, migrate=False, read_only=not self.repair)
        except DatabaseError as exc:
            text = str(exc)
            self.report.add("database", CRITICAL, text.split(" (")[0] if " (" in text else text, text)
            return False
        self.report.add("database", OK, f"PostgreSQL {store.server_version()} at {redact(url)}: reachable")
        version, newest = store.schema_version(), postgres_schema.SCHEMA_VERSION
        if version < newest:
            self.report.add(
                "schema", INFO, f"schema version {version}; the next engine to start migrates it to {newest}"
            )
        else:
            self.report.add("schema", OK, f"schema version {version} (current)")
        self.ws = Workspace(self.root, cfg, store, SystemClock())
        self.identity = store.identity()
        return True

    def _stale_hosts(self, cfg: Config) -> None:
        """Engines on other hosts whose heartbeat stopped: their work is rescued by the leading host."""
        now = time.time()
        stale = [
            e
            for e in upkeep.engines(self.ws.store, running_only=True)
            if e.heartbeat_at < now - cfg.engine.dead_after
        ]
        if stale:
            self.report.add(
                "hosts",
                WARNING,
                f"{len(stale)} engine(s) stopped beating: "
                + ", ".join(f"{e.owner} ({now - e.heartbeat_at:.0f} s ago)" for e in stale[:4]),
                "Their leases are rescued by the leading host without spending an attempt; check those "
                "hosts (down, frozen, or cut off from the database).",
            )
        else:
            self.report.add("hosts", OK, "every registered engine is beating")

    # configuration --------------------------------------------------------------------------------
    def _config(self) -> None:
        path = self.root / CONFIG_NAME
        if not path.exists():
            self.report.add(
                "config",
                CRITICAL,
                f"{self.root} is not an ewg workspace: there is no {CONFIG_NAME}",
                f"Point --workspace at a workspace, or create one with `ewg init {self.root}`.",
            )
            return
        try:
            self.config = load_config(path)
        except ConfigError as exc:
            self.report.add(
                "config",
                ERROR,
                str(exc).split("\n")[0],
                "\n".join(str(exc).split("\n")[1:]) or "Fix ewg.toml as the message says.",
            )
            return
        self.report.add("config", OK, f"{CONFIG_NAME} is valid")

    def _exposures(self) -> None:
        """The paths ewg refuses to run on (workspace.refuse_unsafe): writable or owned by another user."""
        if not (self.root / CONFIG_NAME).exists():
            return
        found = exposures(self.root, self.config)
        self.exposed = bool(found)
        if not found:
            self.report.add(
                "permissions", OK, "only you can change the configuration, the database and the items folder"
            )
            return
        self.report.add(
            "permissions",
            ERROR,
            f"ewg refuses to run here: another user can change {len(found)} path(s): "
            + "; ".join(f"{e.path} {e.why}" for e in found),
            f"Check {CONFIG_NAME} for changes you did not make, then:\n"
            + "\n".join(e.fix for e in found)
            + "\n(not repaired automatically: only you can tell whether the content is still yours)",
        )

    # database -------------------------------------------------------------------------------------
    def _database(self, db: Path, backups_folder: Path) -> bool:
        """Can the database be opened as it is? Never creates, migrates or rewrites it."""
        back = way_back(db, self.report.backups, backups_folder)
        try:  # stat, never open: opening a FIFO waits for a writer for ever
            for side in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                check_regular_file(
                    side,
                    "a database file" if side == db else "SQLite's journal file",
                    "Set [paths] database in ewg.toml to the database file, or move this out of the way "
                    "and put the database (or its newest backup) there.",
                )
        except DatabasePathError as exc:
            self.report.add("database", CRITICAL, str(exc).split(". ")[0], str(exc).split(". ", 1)[-1])
            return False
        if not db.exists():
            self.report.add(
                "database",
                CRITICAL,
                f"{db} is missing; ewg will not recreate it (an empty database would hide every item)",
                back,
            )
            return False
        try:
            check_access(db, write=True)
        except DatabasePathError as exc:  # a permission, not damage: no backup is needed
            self.report.add(
                "permissions",
                CRITICAL,
                str(exc),
                "Fix the permissions as said above; nothing else is wrong that ewg could see.",
            )
            return False
        found = sqlite_file.inspect(db)
        if found.unreadable:
            self.report.add(
                "database",
                CRITICAL,
                f"{db} cannot be read: {found.unreadable}",
                "Check the file's owner and permissions (ls -l), or restore a backup:\n" + back,
            )
            return False
        if found.empty or found.foreign_header:
            what = (
                "is empty (0 bytes)" if found.empty else "is not an SQLite database (its header is damaged)"
            )
            self.report.add("database", CRITICAL, f"{db} {what}", back)
            return False
        if not found.is_database:
            self.report.add(
                "database", CRITICAL, f"{db} cannot be read as a database ({found.damaged})", back
            )
            return False
        version, integrity = found.schema_version, list(found.integrity)
        if version > SCHEMA_VERSION:
            self.report.add(
                "schema",
                CRITICAL,
                f"schema version {version} is newer than this ewg knows "
                f"({SCHEMA_VERSION}); a newer ewg wrote it",
                "Upgrade ewg to the version that wrote this workspace. Do not open it with this one; "
                "if you must go back, restore a backup taken before the upgrade:\n" + back,
            )
            return False
        if version < 0:
            self.report.add(
                "schema",
                CRITICAL,
                f"{db} has schema version {version} (PRAGMA user_version); no ewg writes a negative "
                "version: the file is damaged or was changed by hand",
                "Restore a backup (the file was left as it is):\n" + back,
            )
            return False
        if version == 0:
            self.report.add(
                "schema",
                CRITICAL,
                f"{db} holds no ewg schema (user_version 0)",
                "Point --workspace at an ewg workspace, or restore a backup:\n" + back,
            )
            return False
        if integrity != ["ok"]:
            self.report.add(
                "integrity",
                CRITICAL,
                f"PRAGMA integrity_check found damage: {'; '.join(integrity[:5])}",
                back,
            )
            return False
        if version < SCHEMA_VERSION:
            self.report.add(
                "schema",
                INFO,
                f"schema version {version}; this ewg migrates it to {SCHEMA_VERSION} "
                "at its next start, after an automatic backup",
            )
        else:
            self.report.add("schema", OK, f"schema version {version} (current)")
        self.report.add("integrity", OK, "PRAGMA integrity_check: ok")
        self.identity = found.identity
        return True

    def _open(self, db: Path, cfg: Config) -> None:
        from .clock import SystemClock

        store = SQLiteStore(
            db, synchronous=cfg.engine.synchronous, busy_timeout_ms=cfg.engine.busy_timeout_ms
        )
        self.ws = Workspace(self.root, cfg, store, SystemClock())

    def _permissions(self, db: Path, backups_folder: Path) -> None:
        files = [p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists()]
        if backups_folder.is_dir():
            files += sorted(backups_folder.glob("ewg-*.db"))
        loose = [p for p in files if not _owner_only(p)]
        # the database's own files are in the check above (_exposures); here the backups
        foreign = [p for p in files if p.stat().st_uid != os.getuid() and p.name.startswith("ewg-")]
        if foreign:
            owners = sorted({p.stat().st_uid for p in foreign})
            self.report.add(
                "permissions",
                WARNING,
                f"{len(foreign)} database file(s) belong to another user (uid {', '.join(map(str, owners))}): "
                + ", ".join(p.name for p in foreign[:3]),
                "Run ewg as the workspace's owner; a workspace is used by one account.",
            )
        if not loose:
            self.report.add(
                "permissions", OK, "the database and its backups are readable by their owner only"
            )
            return
        f = self.report.add(
            "permissions",
            WARNING,
            f"{len(loose)} database file(s) readable by other users: "
            + ", ".join(f"{p.name} ({stat.filemode(p.stat().st_mode)})" for p in loose[:4]),
            "chmod 600 " + " ".join(str(p) for p in loose[:4]),
        )
        if self.repair:
            for p in loose:
                os.chmod(p, 0o600)
            f.repaired = f"chmod 600 on {len(loose)} file(s)"

    # engines and leases ---------------------------------------------------------------------------
    def _engines(self) -> None:
        from .owners import owner_alive

        running = upkeep.engines(self.ws.store, running_only=True)
        alive = [e.owner for e in running if owner_alive(e.owner)]
        elsewhere = [e.owner for e in running if owner_alive(e.owner) is None]
        if alive:
            self.report.add(
                "engines",
                INFO,
                f"{len(alive)} engine process(es) running on this host: " + ", ".join(alive[:4]),
                "Repairs are fenced, so they are safe while engines run.",
            )
        if elsewhere:
            self.report.add(
                "engines",
                INFO,
                f"{len(elsewhere)} engine(s) registered on other hosts: " + ", ".join(elsewhere[:4]),
            )
        paused = upkeep.latest_switch(self.ws.store, "paused")
        if paused and paused.value:
            self.report.add(
                "engines",
                WARNING,
                f"claiming is paused by an operator ({paused.reason or 'no reason'})",
                "`ewg unpause` when the work may continue.",
            )
        pause = upkeep.latest_switch(self.ws.store, upkeep.RESOURCE_PAUSE)
        if pause and pause.value:
            self.report.add(
                "engines",
                WARNING,
                f"the engine reported a resource pause: {pause.value}",
                "Free disk space or memory; claiming resumes by itself when the resource is back.",
            )

    def _leases(self) -> None:
        from .owners import owner_alive, owner_host, owner_id
        from .rescue import rescue

        now = time.time()
        cfg = self.ws.config
        rows = upkeep.held_leases(self.ws.store)
        dead, expired, live = [], [], []
        for r in rows:
            alive = owner_alive(r.lease_owner)
            stale = r.heartbeat_at < now - cfg.engine.dead_after or r.lease_expires_at < now
            if alive is False:
                dead.append(r)
            elif alive is None and stale:
                expired.append(r)
            else:
                live.append(r)
        if live:
            self.report.add("leases", OK, f"{len(live)} running item(s) held by live processes")
        if not rows:
            self.report.add("leases", OK, "no leases held")
        for group, sev, why, how in (
            (
                dead,
                ERROR,
                "held by processes on this host that are gone",
                "`ewg doctor --repair` (or starting the engine) rescues them: back to the queue, no attempt spent.",
            ),
            (
                expired,
                WARNING,
                "held by processes on other hosts whose heartbeats stopped",
                "`ewg doctor --repair` rescues them once you know those engines are gone; a running engine's "
                "watchdog does it by itself.",
            ),
        ):
            if not group:
                continue
            owners = sorted({r.lease_owner for r in group})
            f = self.report.add(
                "leases",
                sev,
                f"{len(group)} stale lease(s) {why}: owner(s) {', '.join(owners[:3])}",
                how,
                items=[r.id for r in group],
            )
            if self.repair:
                host = owner_host(owner_id())
                done = [
                    r.id
                    for r in group
                    if rescue(
                        self.ws.store,
                        cfg,
                        host,
                        r.id,
                        r.lease_token,
                        r.rescues,
                        "crashed" if r in dead else "dead",
                        f"doctor: lease owner {r.lease_owner} is gone",
                        now,
                        self.actor,
                    )
                ]
                f.repaired = f"rescued {len(done)} item(s) back to the queue (audit: rescue)"

    # files ------------------------------------------------------------------------------------------
    def _leftovers(self) -> None:
        from .owners import owner_alive

        live = {
            (r.id, r.lease_token)
            for r in upkeep.held_leases(self.ws.store)
            if owner_alive(r.lease_owner) is not False
        }
        root = self.ws.items_root
        if not root.exists():
            self.report.add(
                "items",
                ERROR,
                f"the items folder {root} is missing",
                f"Create it (mkdir {root}); items whose checkpoints were in it are found by the "
                "checkpoint check below and rerun after `ewg doctor --repair`.",
            )
            if self.repair:
                fsafe.make_dir(root)
                if self.identity is not None:  # an older schema has none: marked when it is opened
                    ownership.claim_new(root, self.identity)
                self.report.findings[-1].repaired = f"created {root}"
            return
        if not root.is_dir():
            self.report.add(
                "items", CRITICAL, f"{root} is not a folder", f"Move it away and create the folder {root}."
            )
            return
        known = upkeep.item_ids(self.ws.store)
        why = self._ownership(root, known)
        links = checkpoints.stale_links(root, known)
        if links:
            f = self.report.add(
                "items",
                WARNING,
                f"{len(links)} symbolic link(s) where ewg keeps its folders (ewg makes none; a write "
                "through one would land outside the workspace): "
                + ", ".join(f"{p.relative_to(root)} -> {os.readlink(p)}" for p in links[:3]),
                "`ewg doctor --repair` removes the links (never what they point to); the engine also does "
                "at start, and never writes through one.",
            )
            if self.repair and why:
                f.repaired = "nothing removed: ewg cannot show it owns the items folder (see ownership)"
            elif self.repair:
                for p in links:
                    fsafe.remove_link(p)
                with self.ws.store.write() as conn:
                    conn.record_event(
                        time.time(),
                        self.actor,
                        "doctor_repair",
                        selection="links",
                        reason="symbolic links in the items folder",
                        result=f"removed {len(links)} link(s)",
                    )
                f.repaired = f"removed {len(links)} link(s)"
        orphan = [
            p
            for p, item_id, _s, token in checkpoints.leftovers(root)
            if item_id in known
            and not p.parent.is_symlink()
            and not (p.name.startswith(checkpoints.TMP_PREFIX) and (item_id, token) in live)
        ]
        if not orphan:
            self.report.add("temp", OK, "no orphan temporary folders")
        else:
            size = sum(f.stat().st_size for p in orphan for f in p.rglob("*") if f.is_file())
            f = self.report.add(
                "temp",
                WARNING,
                f"{len(orphan)} orphan temporary folder(s) of dead attempts "
                f"({size / 2**20:.1f} MB): " + ", ".join(str(p.relative_to(root)) for p in orphan[:3]),
                "`ewg doctor --repair` deletes them (the engine also does at start).",
            )
            if self.repair and why:
                f.repaired = "nothing deleted: ewg cannot show it owns the items folder (see ownership)"
            elif self.repair:
                self.ws.confirm_owned()  # adopts an unmarked root that holds only ewg's entries
                for p in orphan:
                    ownership.remove_tree(p)
                with self.ws.store.write() as conn:
                    conn.record_event(
                        time.time(),
                        self.actor,
                        "doctor_repair",
                        selection="temp",
                        reason="orphan temporary folders",
                        result=f"deleted {len(orphan)} folder(s)",
                    )
                f.repaired = f"deleted {len(orphan)} folder(s)"
        self._pending_removals(why)
        strays = [p.name for p in root.iterdir() if p.name not in known and ownership.looks_like_item_dir(p)]
        if strays:
            self.report.add(
                "items",
                INFO,
                f"{len(strays)} folder(s) in {root.name}/ belong to no item: " + ", ".join(strays[:3]),
                "`ewg deep-clean` removes them after a look.",
            )

    def _pending_removals(self, not_owned: str | None) -> None:
        from .verbs import finish_pending_removals, orphaned_removals

        held = orphaned_removals(self.ws)
        if not held:
            return
        f = self.report.add(
            "items",
            WARNING,
            f"{len(held)} item(s) wait for the file removal of a verb whose process died after its commit: "
            + ", ".join(held[:3]),
            "`ewg doctor --repair` (or a running or starting engine) finishes it; until then they are not claimed.",
            items=held,
        )
        if self.repair and not not_owned:
            f.repaired = f"finished the removal for {finish_pending_removals(self.ws)} item(s)"

    def _ownership(self, root: Path, known: set[str]) -> str | None:
        """Whether the items root is this database's (its marker, engine/ownership.py); the reason if not."""
        identity = self.identity
        if identity is None:
            self.report.add(
                "ownership",
                WARNING,
                "the database has no workspace identity yet (an older schema), so the items folder cannot be "
                "shown to be its own",
                "Open the workspace once with ewg (it migrates, after a backup); until then nothing is deleted.",
            )
            return "no identity"
        why = ownership.problem(root, identity, lambda: known, workspace=self.root)
        if why:
            what, _, fix = why.partition("; nothing was deleted. ")
            self.report.add("ownership", ERROR, what, (fix or what) + " Until then nothing is deleted there.")
        elif ownership.read_marker(root / ownership.ITEMS_MARKER) is None:
            self.report.add(
                "ownership",
                INFO,
                f"{root} has no ownership marker yet; it holds only ewg's entries",
                "The next ewg command that opens the workspace (or `ewg doctor --repair`) marks it.",
            )
            if self.repair:
                self.ws.confirm_owned()
                self.report.findings[-1].repaired = f"wrote {root / ownership.ITEMS_MARKER}"
        else:
            self.report.add("ownership", OK, f"{root} carries this database's ownership marker")
        return why

    def _checkpoints(self) -> None:
        store = self.ws.store
        items = {i.id: i for i in upkeep.item_places(store)}
        # As bytes: a manifest that is not UTF-8 made the sqlite3 driver raise, and doctor told you to run doctor.
        rows = upkeep.checkpoint_records(store, live_only=True)
        have = {(r.item_id, r.stage) for r in rows}
        damaged: dict[str, list[tuple[str, str]]] = {}
        checked = 0
        for r in rows:
            item = items.get(r.item_id)
            if item is None:
                continue
            if pipeline.stage_index(item.kind, r.stage) > pipeline.stage_index(item.kind, item.stage):
                continue  # not a completed stage of the item (yet): nothing relies on it
            checked += 1
            try:
                manifest = checkpoints.parse_manifest(r.manifest or b"{}")
            except checkpoints.ManifestError as exc:
                damaged.setdefault(r.item_id, []).append((r.stage, f"its manifest record is corrupt: {exc}"))
                continue
            problems = checkpoints.verify(self.ws.item_dir(r.item_id) / r.stage, manifest)
            if problems:
                damaged.setdefault(r.item_id, []).append((r.stage, "; ".join(problems[:2])))
        for item_id, item in items.items():
            order = pipeline.stages_of(item.kind)
            first = 1 if item.kind == pipeline.CLIP else 0  # clips are born "discovered"
            for stage in order[first : pipeline.stage_index(item.kind, item.stage) + 1]:
                if (item_id, stage) not in have:
                    damaged.setdefault(item_id, []).append(
                        (stage, "completed, but no checkpoint is recorded")
                    )
        if not damaged:
            self.report.add(
                "checkpoints",
                OK,
                f"{checked} checkpoint(s) of completed stages verified (files, sizes, checksums)",
            )
            return
        for item_id, found in sorted(damaged.items()):
            item = items[item_id]
            order = pipeline.stages_of(item.kind)
            earliest = min((s for s, _ in found), key=order.index)
            detail = "; ".join(f"{s}: {why}" for s, why in found[:3])
            f = self.report.add(
                "checkpoints",
                ERROR,
                f"{item_id}: damaged checkpoint(s): {detail}",
                f"`ewg doctor --repair` marks them stale and moves {item_id} back to before "
                f"{earliest!r} so the stage runs again (ewg reprocess {item_id} --from {earliest}).",
                items=[item_id],
            )
            if self.repair:
                f.repaired = self._rerun_from(item_id, item.kind, earliest, detail)

    def _unrecorded(self) -> None:
        check = unrecorded_outputs(self.ws, full=True)
        for item_id, stage, problem in check.corrupt:
            self.report.add(
                "checkpoints",
                ERROR,
                f"{item_id}: the {stage} checkpoint folder has a corrupt manifest: {problem}",
                f"Nothing relies on it (the database does not record {stage} as done); the stage runs again "
                f"and replaces the folder. To look first: ls -l {self.ws.item_dir(item_id) / stage}.",
                items=[item_id],
            )
        for item_id, stage, problem in check.unverified:
            self.report.add(
                "checkpoints",
                INFO,
                f"{item_id}: output of {stage} is on disk but not recorded and does not verify ({problem})",
                "Nothing to do: the stage runs again and replaces it.",
                items=[item_id],
            )
        if not check.unrecorded:
            self.report.add("commits", OK, "every checkpoint folder on disk is recorded in the database")
            return
        for u in check.unrecorded:
            f = self.report.add(
                "commits",
                ERROR,
                f"{u.item_id}: completed output of {', '.join(u.stages)} is on disk and verifies, but the "
                f"database records {u.recorded or 'nothing'} as its last completed stage: their commits are "
                "gone (a database copied without its -wal, a restored backup, a power loss, or a kill between "
                "a stage's rename and its commit)",
                (
                    f"`ewg doctor --repair` re-adopts {', '.join(u.adoptable)} (checksums verified) and moves "
                    f"{u.item_id} on, one audited transaction; otherwise those stages run again."
                    if u.adoptable
                    else "Nothing can be re-adopted; the stages run again."
                )
                + (f" {u.note[0].upper()}{u.note[1:]}." if u.note else ""),
                items=[u.item_id],
            )
            if self.repair and u.adoptable:
                f.repaired = self._adopt(u)

    def _adopt(self, u: Unrecorded) -> str:
        """Record the verified outputs as the item's completed stages, in one transaction, only if the
        item is still where the scan found it (not claimed, not moved by anyone in between)."""
        now = time.time()
        last = u.adoptable[-1]
        nxt = pipeline.next_stage(u.kind, last)
        changed = "not repaired: the item changed while doctor looked; run `ewg doctor` again"
        with self.ws.store.write() as unit:
            place = unit.lock_item_place(u.item_id)
            if place is None or place.stage != u.recorded or place.status == "running":
                return changed
            status = "done" if nxt is None else ("stopped" if place.status == "stopped" else "queued")
            if not unit.adopt_outputs(
                u.item_id,
                expect_stage=u.recorded,
                expect_status=place.status,
                manifests={stage: json.dumps(u.manifests[stage]) for stage in u.adoptable},
                stage=last,
                next_stage=nxt,
                status=status,
                now=now,
            ):
                return changed
            event = unit.record_event(
                now,
                self.actor,
                "doctor_repair",
                selection=u.item_id,
                reason="lost commit: verified checkpoint(s) on disk that the database did not record",
                affected=[u.item_id],
                before={"stage": u.recorded, "status": place.status},
                after={"stage": last, "status": status},
                result=f"re-adopted {', '.join(u.adoptable)}",
            )
        return (
            f"re-adopted {', '.join(u.adoptable)}; {u.item_id} is now {last}/{status} (audit event #{event})"
        )

    def _rerun_from(self, item_id: str, kind: str, stage: str, why: str) -> str:
        from .verbs import Operator, VerbError

        op = Operator(self.ws, actor=self.actor)
        before = pipeline.previous_stage(kind, stage)
        reason = f"doctor --repair: damaged checkpoint ({why})"[:500]
        try:
            if before is not None:
                preview = op.rollback(item_id, before, reason=reason)
            else:
                preview = op.reprocess([item_id], from_stage=stage, reason=reason)
        except VerbError as exc:
            return f"not repaired: {exc}"
        return (
            f"checkpoints from {stage!r} on marked stale; {item_id} moved back to "
            f"{before or 'the start'} (audit event #{preview.event_id})"
        )

    # resources and dependencies -----------------------------------------------------------------
    def _disk(self, db: Path | None, cfg: Config) -> None:
        items = self.root / cfg.paths.items
        places = {"workspace items": items if items.is_dir() else self.root}
        if db is not None:  # None: the database is on a server, its disk is the server's
            places["database"] = db.parent
        for label, path in places.items():
            if not path.exists():
                continue
            free = self.disk_free(str(path))
            if free < cfg.health.disk_critical_free_mb:
                self.report.add(
                    "disk",
                    CRITICAL,
                    f"{label} volume ({path}): {free:.0f} MB free, below the critical "
                    f"floor {cfg.health.disk_critical_free_mb:.0f} MB: the engine claims no work",
                    "Free space on that volume (old backups, `ewg deep-clean`, other files).",
                )
            elif free < cfg.health.disk_warn_free_mb:
                self.report.add(
                    "disk",
                    WARNING,
                    f"{label} volume ({path}): {free:.0f} MB free, below the warning "
                    f"level {cfg.health.disk_warn_free_mb:.0f} MB",
                    "Free space before it runs out.",
                )
            else:
                self.report.add("disk", OK, f"{label} volume: {free / 1024:.1f} GB free")

    def _services(self) -> None:
        for name, svc in self.config.services.items():
            ok, message = self.probe(svc.url, svc.timeout, svc.expect_status)
            users = [
                f"{k}/{s}"
                for k, t in self.config.stages.items()
                for s, sc in t.items()
                if name in sc.services
            ]
            if ok:
                self.report.add("services", OK, f"{name} is up ({message})")
            else:
                self.report.add(
                    "services",
                    WARNING,
                    f"{name} is down ({svc.url}: {message}); "
                    f"{', '.join(users) or 'no stage'} wait(s) as blocked, no attempts spent",
                    f"Start the service or fix [services.{name}] url in ewg.toml.",
                )

    def _dependencies(self) -> None:
        missing = 0
        for kind in pipeline.KINDS:
            for stage in pipeline.stages_of(kind):
                if kind == pipeline.CLIP and stage == pipeline.stages_of(kind)[0]:
                    continue
                problem, fix, severity = self._stage_dependency(kind, stage)
                if problem:
                    missing += 1
                    self.report.add("dependencies", severity, f"[stages.{kind}.{stage}]: {problem}", fix)
        if not missing:
            self.report.add("dependencies", OK, "every configured stage has what it needs")

    def _stage_dependency(self, kind: str, stage: str) -> tuple[str, str, str]:
        from .stages import BUILTIN

        sc = self.config.stage(kind, stage)
        if sc.kind == "command":
            program = (sc.command or [""])[0]
            if "{" not in program and shutil.which(program) is None and not Path(program).is_file():
                return (
                    f"the program {program!r} is not on PATH",
                    f"Install {program} or give its full path in `command`.",
                    ERROR,
                )
            return "", "", OK
        if sc.kind == "python":
            try:
                module, _, attr = (sc.callable or "").partition(":")
                obj = importlib.import_module(module)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except Exception as exc:  # noqa: BLE001 - any import failure is what we report
                return (
                    f"callable {sc.callable!r} cannot be loaded ({type(exc).__name__}: {exc})",
                    "Install the module or fix `callable` in ewg.toml.",
                    ERROR,
                )
            return "", "", OK
        if sc.kind != "builtin":
            return "", "", OK
        from . import media  # noqa: F401  (registers the built-in stages)

        target = BUILTIN.get((kind, stage))
        if target is None:
            return (
                f"there is no built-in {kind} stage {stage!r}",
                "Configure a command or python stage.",
                ERROR,
            )
        module = target.partition(":")[0]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            name = getattr(exc, "name", None) or str(exc)
            return (
                f"the built-in stage needs {name}, which cannot be imported ({exc})",
                f"pip install {'av' if name == 'av' else name} into ewg's environment.",
                ERROR,
            )
        if (kind, stage) == (pipeline.EPISODE, "transcribed"):
            options = sc.options
            model, argv = options.get("whisper_model"), options.get("command")
            whisper = importlib.util.find_spec("faster_whisper") is not None
            if model and not whisper:
                return (
                    "options.whisper_model is set but faster-whisper is not installed",
                    "pip install faster-whisper, or remove whisper_model.",
                    ERROR,
                )
            if argv:
                program = str(argv[0])
                if shutil.which(program) is None and not Path(program).is_file():
                    return (
                        f"options.command program {program!r} is not on PATH",
                        "Install it or give its full path.",
                        ERROR,
                    )
            elif not model:
                return (
                    "only episodes with a caption file (.srt/.vtt next to the video) can be transcribed: "
                    + (
                        "faster-whisper is not installed"
                        if not whisper
                        else "options.whisper_model is not set"
                    )
                    + " and there is no options.command; the others fail as missing_dependency",
                    'pip install faster-whisper and set options.whisper_model = "small", or set '
                    "options.command to your transcriber.",
                    INFO,
                )
        return "", "", OK

    # backups ------------------------------------------------------------------------------------------
    def _backups(self, db: Path, folder: Path) -> None:
        backups = self.report.backups
        usable = [b for b in backups if b["usable"]]
        broken = [b for b in backups if not b["usable"]]
        if usable:
            b = usable[0]
            self.report.add(
                "backups",
                OK,
                f"{len(usable)} usable backup(s); newest {Path(b['file']).name} "
                f"({_stamp(b['modified'])}, {b['items']} items). Way back for a damaged database:\n  "
                + way_back(db, backups, folder).replace("\n", "\n  "),
            )
        else:
            interval = self.config.engine.backup_interval if self.config else 3600.0
            self.report.add(
                "backups",
                INFO,
                f"no usable backup in {folder} yet"
                + (
                    f" (the engine takes one every {interval:.0f} s while it runs)"
                    if interval
                    else " and [engine] backup_interval = 0 turns scheduled backups off"
                ),
                "Backups are taken before every migration and on the schedule.",
            )
        if broken:
            self.report.add(
                "backups",
                WARNING,
                f"{len(broken)} backup file(s) are unusable: "
                + ", ".join(f"{Path(b['file']).name} ({b['integrity'][:60]})" for b in broken[:3]),
                "Move them out of the backups folder so nobody restores them.",
            )


def diagnose(
    root: Path,
    repair: bool = False,
    actor: str | None = None,
    probe: Callable[[str, float, int], tuple[bool, str]] = check_service,
    disk_free: Callable[[str], float] = disk_free_mb,
) -> Report:
    """Run every check on the workspace at `root` (and repair what is safe when asked)."""
    return Doctor(root, repair=repair, actor=actor, probe=probe, disk_free=disk_free).run()
