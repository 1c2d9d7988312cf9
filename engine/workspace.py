"""A workspace: `ewg.toml`, the database, the items folder and backups."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import config as configmod
from . import fsafe, ownership, pipeline
from .clock import Clock, SystemClock
from .config import Config, ConfigError
from .config_reference import reference_toml
from .db import DatabaseError, SQLiteStore, Store, upkeep
from .db.dialect import is_url
from .fsafe import Exposure, UnsafePath

CONFIG_NAME = "ewg.toml"
ITEM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")

# What `ewg init` writes and `ewg init --print-config` prints: every key of engine/config.py with its
# default and its description (engine/config_reference.py).
DEFAULT_TOML = reference_toml()


@dataclass
class Workspace:
    root: Path
    config: Config
    store: Store
    clock: Clock

    @functools.cached_property
    def items_root(self) -> Path:  # cached: every claim builds paths under it
        return self.root / self.config.paths.items

    @property
    def backups(self) -> Path:
        return self.root / self.config.paths.backups

    def item_dir(self, item_id: str) -> Path:
        return self.items_root / item_id

    def known_ids(self) -> set[str]:
        return upkeep.item_ids(self.store)

    def confirm_owned(self) -> None:
        """Before deleting under the items root: its marker names this database (engine/ownership.py);
        OwnershipError (exit 2) says why not."""
        known = functools.cache(self.known_ids)  # read once, and only when the root has no marker
        ownership.confirm(self.items_root, self.store.identity(), known, workspace=self.root)

    def disk_floor_breach(self) -> str:
        """Why claiming pauses, read off the items' and the database's disks ("" when there is room)."""
        from .health import floor_breach

        folders = [str(self.items_root if self.items_root.exists() else self.root)]
        if self.store.local_dir is not None:
            folders.append(str(self.store.local_dir))
        return floor_breach(folders, self.config.health.disk_critical_free_mb)

    def close(self) -> None:
        self.store.close()


def resolve_root(arg: str | None) -> Path:
    return Path(arg or os.environ.get("EWG_WORKSPACE") or ".").expanduser().resolve()


DATABASE_URL_ENV = "EWG_DATABASE_URL"


def database_url(config: Config) -> str | None:
    """The PostgreSQL URL this workspace uses (EWG_DATABASE_URL over `[paths] database`), or None
    for the embedded SQLite file."""
    env = os.environ.get(DATABASE_URL_ENV, "").strip()
    if env:
        if not is_url(env):
            raise ConfigError(
                f"{DATABASE_URL_ENV} must be a postgresql:// URL (it is {env[:60]!r}); unset it to use "
                "[paths] database from ewg.toml."
            )
        return env
    return config.paths.database if is_url(config.paths.database) else None


def _store_for(root: Path, config: Config) -> tuple[Path, dict]:
    path = root / config.paths.database
    return path, {"synchronous": config.engine.synchronous, "busy_timeout_ms": config.engine.busy_timeout_ms}


def _open_store(root: Path, config: Config, readonly: bool, verify: bool = True) -> Store:
    url = database_url(config)
    if url is not None:
        from .db.postgres import PostgresStore  # psycopg only where a server is used

        return PostgresStore.open(url, migrate=not readonly, read_only=readonly)
    path, kw = _store_for(root, config)
    return SQLiteStore.open(
        path,
        backups=root / config.paths.backups,
        migrate=not readonly,
        verify=verify,
        read_only=readonly,
        **kw,
    )


def _create_store(root: Path, config: Config) -> Store:
    url = database_url(config)
    if url is not None:
        from .db.postgres import PostgresStore

        return PostgresStore.create(url)
    path, kw = _store_for(root, config)
    return SQLiteStore.create(path, **kw)


def open_workspace(
    root: Path, clock: Clock | None = None, readonly: bool = False, verify: bool = True
) -> Workspace:
    """Open an existing workspace; ConfigError / DatabaseError say what is wrong and how to fix it.

    `readonly` opens it without writing anything, not even a schema migration. `verify` False
    leaves the database's page check to `ws.store.verify()` (the console runs it after its first
    frame, before its engine starts)."""
    root = Path(root)
    if not (root / CONFIG_NAME).exists():
        raise ConfigError(
            f"{root} is not an ewg workspace (no {CONFIG_NAME}). Create one with "
            f"`ewg init {root}`, or pass --workspace DIR / set EWG_WORKSPACE."
        )
    refuse_unsafe(root)  # before the configuration is even read: another user may have written it
    config = configmod.load(root / CONFIG_NAME)
    refuse_unsafe(root, config)
    store = _open_store(root, config, readonly, verify)
    try:
        check_foreign_engines(store)
    except DatabaseError:
        store.close()
        raise
    ws = Workspace(root, config, store, clock or SystemClock())
    if not readonly:
        _adopt_items_root(ws)
    return ws


def _adopt_items_root(ws: Workspace) -> None:
    """A workspace made before ownership markers gets one, if its items root holds only ewg's entries;
    otherwise deletes are refused later, with the reason (ownership.confirm)."""
    root = ws.items_root
    if root.is_dir() and ownership.read_marker(root / ownership.ITEMS_MARKER) is None:
        with contextlib.suppress(OSError):  # a read-only or full volume: the deletes that need it say so
            ownership.adopt(root, ws.store.identity(), ws.known_ids)


def _user(uid: int) -> str:
    return fsafe.user_name(uid)


class UnsafeWorkspace(UnsafePath):
    """Another account can change the workspace's configuration, database or items folder (or owns
    them): ewg refuses it before running anything; the message names each path and its fix."""


def exposures(root: Path, config: Config | None = None) -> list[Exposure]:
    """The paths of a workspace that someone other than you can write: the folder itself and `ewg.toml`;
    with its configuration, also the database (with its -wal and -shm, where a link is refused too),
    the database's folder and the items folder."""
    root = Path(root)
    paths: list[tuple[Path, bool]] = [(root, True), (root / CONFIG_NAME, True)]
    if config is not None:
        paths.append((root / config.paths.items, True))
    if config is not None and database_url(config) is None:
        db = root / config.paths.database
        real = Path(os.path.realpath(db))  # SQLite puts -wal and -shm next to the file a link names
        paths += [(real.parent, True), (db, True)]
        paths += [(Path(f"{real}{suffix}"), False) for suffix in ("-wal", "-shm")]
    found, seen = [], set()
    for path, link_ok in paths:
        key = os.path.realpath(path) if link_ok else str(path)
        if key in seen:
            continue
        seen.add(key)
        exposed = fsafe.exposure(path, link_ok=link_ok)
        if exposed is not None:
            found.append(exposed)
    return found


def refuse_unsafe(root: Path, config: Config | None = None) -> None:
    found = exposures(root, config)
    if not found:
        return
    lines = "\n".join(f"  {e.path} {e.why}.\n    Fix: {e.fix}" for e in found)
    raise UnsafeWorkspace(
        f"refusing to use the workspace {root}: another user could change what ewg runs as you "
        f"(a command stage added to {CONFIG_NAME}, work rewritten in the database or the items folder).\n"
        f"{lines}\n"
        f"Check {CONFIG_NAME} for changes you did not make, then apply the fix; nothing was changed."
    )


def check_foreign_engines(store: Store) -> None:
    """Refuse a workspace that a live engine of another OS user on this host is using."""
    import socket

    import psutil

    for engine in upkeep.engines(store, running_only=True):
        if engine.host != socket.gethostname():
            continue
        try:
            uid = psutil.Process(engine.pid).uids().real
        except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
            continue
        if uid != os.getuid():
            raise DatabaseError(
                f"{store.describe()} is in use by an engine of {_user(uid)} (pid {engine.pid}). "
                "Stop it, or run ewg as that user; nothing was changed."
            )


def with_database(config_text: str, url: str) -> str:
    """The configuration with `[paths] database` naming a PostgreSQL server (`ewg init --database`)."""
    if not is_url(url):
        raise ConfigError(
            f"--database must be a postgresql:// URL (got {url[:60]!r}), e.g. "
            "postgresql://ewg@db.example/ewg; leave it out for the embedded SQLite file."
        )
    line = re.compile(r'^database = "[^"\n]*"', re.MULTILINE)
    text, n = line.subn(lambda _m: f"database = {json.dumps(url)}", config_text, count=1)
    if n != 1:
        raise ConfigError("the configuration has no [paths] database line to point at the server")
    return text


def init_workspace(
    root: Path, config_text: str = DEFAULT_TOML, clock: Clock | None = None, database: str | None = None
) -> Workspace:
    """A new workspace; `database` (a postgresql:// URL) puts its database on a server instead of
    the SQLite file beside it."""
    root = Path(root)
    if database is not None:
        config_text = with_database(config_text, database)
    if (root / CONFIG_NAME).exists():
        raise ConfigError(
            f"{root} already holds a workspace ({CONFIG_NAME} exists); nothing was changed. "
            "Open it with `ewg --workspace` or choose another folder."
        )
    config = configmod.parse(config_text, root / CONFIG_NAME)
    path, _kw = _store_for(root, config)
    if database_url(config) is None and path.exists():
        raise DatabaseError(
            f"{path} already exists; refusing to overwrite it. Move it away or choose another folder."
        )
    items = Path(os.path.normpath(root / config.paths.items))  # "../shared" even before root exists
    if ownership.read_marker(items / ownership.ITEMS_MARKER) is not None:
        raise ownership.OwnershipError(
            f"The items folder {items} already belongs to another ewg workspace ({ownership.ITEMS_MARKER} "
            "is there); two workspaces sharing one items folder would delete each other's checkpoints. "
            "Give this workspace its own [paths] items folder; nothing was changed."
        )
    if root.exists():
        refuse_unsafe(root)  # a folder others can write is no place for a new workspace
    fsafe.make_dir(root)
    fsafe.make_dir(items)
    store = _create_store(root, config)
    ownership.claim_new(items, store.identity())
    fsafe.write_text(root / CONFIG_NAME, config_text)  # owner-only from birth, whatever the umask
    return Workspace(root, config, store, clock or SystemClock())


def check_item_id(item_id: str) -> str:
    if not ITEM_ID_RE.match(item_id) or ".." in item_id:
        raise ValueError(
            f"item id {item_id!r} is not allowed: use letters, digits, '_', '-' and '.', "
            "at most 200 characters, starting with a letter or digit"
        )
    return item_id


def add_episode(
    ws: Workspace,
    item_id: str,
    source: str,
    show: str = "",
    title: str = "",
    stage: str | None = None,
    fingerprint: str | None = None,
) -> bool:
    """Insert a new episode (ready to run its next stage); an existing id is left untouched (False),
    except that an episode without a content fingerprint (from before schema 6) is given this one."""
    check_item_id(item_id)
    if stage is not None:
        pipeline.check_stage(pipeline.EPISODE, stage)
    now = ws.clock.now()
    episode = upkeep.NewEpisode(
        item_id,
        source,
        show,
        title,
        stage,
        pipeline.next_stage(pipeline.EPISODE, stage),
        pipeline.EPISODE_STAGES[-1],
        fingerprint,
    )
    with ws.store.write() as unit:
        return unit.insert_episode(episode, now=now)
