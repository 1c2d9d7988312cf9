"""The SQLite driver: the embedded default, one file beside the workspace.

Connection settings (WAL, busy_timeout, synchronous, foreign keys), BEGIN IMMEDIATE with an
in-process write lock, the checks made before a file is opened (type, permissions, header,
quick_check, schema version), the frozen migrations (PRAGMA user_version) and the online backup.
The sqlite3 driver is used directly: an ORM session per state change would cost about 1 ms.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from .. import fsafe  # standard library only: owner-only folders whatever the umask
from .base import Store
from .dialect import SQLITE
from .types import DatabaseError, DatabasePathError, ReadInterrupted
from .unit import Unit

SCHEMA_VERSION = 7
SQLITE_HEADER = b"SQLite format 3\x00"

_FILE_TYPES = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def check_regular_file(path: Path, what: str, fix: str) -> os.stat_result | None:
    """stat (never open) `path`: None when it does not exist, else its stat if it is a regular file.

    Opening a FIFO blocks until a writer comes, and SQLite opens the path it is given, so the type is
    checked by stat first: `ewg status` on a FIFO hung for ever before this check."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DatabasePathError(f"{path} cannot be looked at ({exc.strerror}); {fix}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = _FILE_TYPES.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise DatabasePathError(f"{path} is {kind}, not {what}; it was left as it is. {fix}")
    return st


def check_access(path: Path, write: bool = True) -> None:
    """Refuse, naming the permission and its fix, a database this user cannot read (or write).

    SQLite reports a read-only file or folder as "attempt to write a readonly database" on the first
    write, which read like damage ("restore a backup") when it is a permission. In WAL mode SQLite
    also creates `NAME-wal` and `NAME-shm` beside the database, so its folder must be writable too."""
    folder = path.parent
    problems: list[str] = []
    fixes: list[str] = []
    mode = os.R_OK | (os.W_OK if write else 0)
    if not os.access(path, mode):
        problems.append(f"{path} is not {'readable and writable' if write else 'readable'} by you")
        fixes.append(f"chmod u+rw {path}")
    for side in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        if write and side.exists() and not os.access(side, os.R_OK | os.W_OK):
            problems.append(f"{side} is not writable by you")
            fixes.append(f"chmod u+rw {side}")
    if write and not os.access(folder, os.W_OK | os.X_OK):
        problems.append(f"its folder {folder} is not writable by you (SQLite keeps {path.name}-wal there)")
        fixes.append(f"chmod u+rwx {folder}")
    if not problems:
        return
    try:
        readonly_fs = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        readonly_fs = False
    if readonly_fs:
        raise DatabasePathError(
            f"{path} is on a read-only file system, so ewg cannot write it. This is not damage: the file "
            f"was not changed. Remount it read-write (mount -o remount,rw ...) or move the workspace; "
            f"`--readonly` does not help, SQLite needs {path.name}-shm beside it."
        )
    raise DatabasePathError(
        f"permission problem: {'; '.join(problems)}. This is not damage: the file was not changed, and "
        f"no backup is needed. Fix the permissions ({'; '.join(fixes)}) as the workspace's owner, "
        "then start again."
    )


_HEADER_FDS: dict[tuple[int, int], int] = {}
_HEADER_LOCK = threading.Lock()


def read_header(path: Path, size: int = len(SQLITE_HEADER)) -> bytes:
    """The first bytes of a database file, read without ever closing a descriptor of it.

    POSIX advisory locks belong to the process: closing any descriptor of a file drops every lock the
    process holds on it, its SQLite connections' too, and another connection may then write under a
    reader that believes it is protected ("database disk image is malformed", seen twice in a bench
    that opened a second store beside its first). So one descriptor per file is opened once and kept
    for the life of the process; reads are pread()s on it."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino)
    with _HEADER_LOCK:
        fd = _HEADER_FDS.get(key)
        if fd is None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != key:  # replaced between the stat and the open
                key = (opened.st_dev, opened.st_ino)
            _HEADER_FDS.setdefault(key, fd)
            fd = _HEADER_FDS[key]
    return os.pread(fd, size, 0)


def _is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


# Rows per multi-row statement: far below SQLite's variable limit (32766) at 9 variables a row.
_BATCH_ROWS = 200


class Reader:
    """A connection used by one consumer at a time, which another thread may interrupt.

    `Store.connection()` is shared by everything that runs on a thread (a pooled worker runs
    verbs too), so interrupting it could cancel someone else's write. A Reader's connection
    is its own and query_only, so `interrupt()` can only ever cancel the read it was meant for.
    """

    dialect = SQLITE  # the read side's SQL asks it for SQLite's own clauses (engine.db.queries)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._cancelled = False

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self._run(sql, params, all_rows=True)

    def read_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        return self._run(sql, params, all_rows=False)

    def _run(self, sql: str, params: Sequence[Any], all_rows: bool) -> Any:
        if self._cancelled:  # between two statements SQLite's own flag would be lost
            raise ReadInterrupted()
        try:
            cursor = self._conn.execute(sql, params)
            return cursor.fetchall() if all_rows else cursor.fetchone()
        except sqlite3.OperationalError as exc:
            if self._cancelled and "interrupt" in str(exc):
                raise ReadInterrupted() from None
            raise

    def interrupt(self) -> None:
        """Cancel the read in progress (from any thread); reads fail with ReadInterrupted until `resume()`."""
        self._cancelled = True
        self._conn.interrupt()

    def resume(self) -> None:
        """Accept reads again; call it before starting the next read, never while one runs."""
        self._cancelled = False


class SQLiteStore(Store):
    """One per process and database file; hands each thread its own connection."""

    backend = "sqlite"
    dialect = SQLITE
    schema_target = SCHEMA_VERSION

    def __init__(
        self, path: Path, synchronous: str = "NORMAL", busy_timeout_ms: int = 5000, read_only: bool = False
    ) -> None:
        super().__init__()
        self.read_only = read_only  # `--readonly`: SQLite refuses every write of this process
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self._write_lock = threading.RLock()
        self._backups: Path | None = None  # named in the damage message
        self._verified = False  # no write until it is (opened with verify=False: `write` checks first)
        self._verify_lock = threading.Lock()

    def describe(self) -> str:
        return str(self.path)

    def verify(self) -> None:
        """PRAGMA quick_check (every page read once): DatabaseError saying how to restore when the
        file is damaged. Once per store, on a connection of its own (its page cache goes with it);
        callers at the same time wait for the one check. It changes nothing."""
        with self._verify_lock:
            if self._verified:
                return
            conn = None
            try:
                conn = self._connect()
                damage = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
            except sqlite3.DatabaseError as exc:
                damage = [str(exc)]
            finally:
                if conn is not None:
                    conn.close()
            if damage != ["ok"]:
                raise DatabaseError(
                    f"{self.path} is damaged (PRAGMA quick_check: {'; '.join(damage)[:300]}). It was not "
                    f"changed. Restore the newest backup from {self._backups or 'the backups folder'}; "
                    "`ewg doctor` shows how."
                )
            self._verified = True

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, **kw: Any) -> SQLiteStore:
        path = Path(path)
        if path.exists():
            raise DatabaseError(f"{path} already exists; refusing to overwrite a database.")
        fsafe.make_dir(path.parent)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)  # owner-only from birth
        os.close(fd)
        store = cls(path, **kw)
        store._verified = True  # made just now: nothing to check
        store.migrate()
        return store

    @classmethod
    def open(
        cls, path: Path, backups: Path | None = None, migrate: bool = True, verify: bool = True, **kw: Any
    ) -> SQLiteStore:
        """Open an existing database; an older schema is backed up and migrated unless `migrate` is
        False (read-only use: every query works on older schemas, only slower without newer indexes).
        `verify` False leaves the page check (`verify`, ~90 ms at 100k items) to the caller, for the
        console to run after its first frame; a migration still checks first."""
        path = Path(path)
        fix = "Set [paths] database in ewg.toml to a database file, or move this out of the way and restore the database there."
        for side in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            check_regular_file(side, "a database file" if side == path else "SQLite's journal file", fix)
        if not path.exists():
            raise DatabaseError(
                f"The database {path} is missing. It is never recreated silently, because an empty one would "
                f"hide every item. Restore it from {backups or 'the backups folder'} (`ewg doctor` lists the "
                f"backups), or create a new workspace with `ewg init`."
            )
        check_access(path, write=migrate)
        header = read_header(path)
        if not header:  # connecting would write a fresh header into it (journal_mode=WAL)
            raise DatabaseError(
                f"{path} is empty (0 bytes): it was cut short (a full disk?) and holds no items. "
                f"It was left as it is. Restore the newest backup from "
                f"{backups or 'the backups folder'}; `ewg doctor` shows how."
            )
        if header != SQLITE_HEADER:
            raise DatabaseError(
                f"{path} is not an SQLite database (its header is damaged). "
                f"Restore the newest backup from {backups or 'the backups folder'}; "
                "`ewg doctor` shows how."
            )
        store = cls(path, **kw)
        try:
            version = store.schema_version()
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(
                f"{path} cannot be read as a database ({exc}). Restore the newest backup "
                f"from {backups or 'the backups folder'}; `ewg doctor` shows how."
            ) from None
        if version > SCHEMA_VERSION:
            raise DatabaseError(
                f"{path} has schema version {version}, newer than this ewg knows "
                f"({SCHEMA_VERSION}). Upgrade ewg; do not open it with an older version."
            )
        if version < 0:
            store.close()
            raise DatabaseError(
                f"{path} has schema version {version} (PRAGMA user_version): no ewg writes a negative "
                "version, so the file is damaged or was changed by hand. It was left as it is. Restore the "
                f"newest backup from {backups or 'the backups folder'}; `ewg doctor` shows how."
            )
        if version == 0:
            raise DatabaseError(
                f"{path} holds no ewg schema. Point --workspace at an ewg workspace "
                "or create one with `ewg init`."
            )
        store._backups = backups
        if verify or (version < SCHEMA_VERSION and migrate):
            try:
                store.verify()
            except DatabaseError:
                store.close()
                raise
        if version < SCHEMA_VERSION and migrate:
            if backups is not None:
                store.backup(backups, label=f"pre-migration-v{version}")
            store.migrate()
        return store

    def reader(self) -> Reader:
        """A read-only connection of its own, for one consumer that cancels stale reads (the console's poll)."""
        conn = self._connect()
        conn.execute("PRAGMA query_only=ON")
        with self._lock:
            self._all.append(conn)
        return Reader(conn)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=self.busy_timeout_ms / 1000, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise DatabaseError(f"{self.path}: could not switch to WAL mode (got {mode}).")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        if self.read_only:
            conn.execute("PRAGMA query_only=ON")
        return conn

    # -- transactions ---------------------------------------------------------------------
    @contextlib.contextmanager
    def write(self) -> Iterator[Unit]:
        """One write transaction (BEGIN IMMEDIATE).

        Threads of this process queue on a lock instead of in SQLite's busy handler, whose
        sleeps (1, 2, 5, 10 ms...) are far longer than our transactions. Another process
        holding the lock past busy_timeout is retried with backoff (tenacity), never a crash.
        """
        if not self._verified:
            self.verify()  # a damaged file is refused before anything is written to it
        conn = self.connection()
        with self._write_lock:
            self._execute_busy_safe(conn, "BEGIN IMMEDIATE")
            try:
                yield Unit(conn, SQLITE)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            else:
                try:
                    self._execute_busy_safe(conn, "COMMIT")
                except BaseException:  # a commit that failed (disk full, I/O error) leaves nothing open
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise

    def _execute_busy_safe(self, conn: sqlite3.Connection, sql: str) -> None:
        try:
            conn.execute(sql)
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
        self.busy_waits += 1
        self.last_busy_at = time.time()
        for attempt in Retrying(
            retry=retry_if_exception(_is_busy),
            stop=stop_after_delay(300),
            wait=wait_exponential(multiplier=0.05, max=2.0),
            reraise=True,
        ):
            with attempt:
                conn.execute(sql)

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self.connection().execute(sql, params).fetchall()  # SQLite reads the shared SQL as is

    def read_one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        return self.connection().execute(sql, params).fetchone()

    # -- schema ---------------------------------------------------------------------------
    def schema_version(self) -> int:
        return int(self.connection().execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION, one numbered step at a time, each in one transaction."""
        version = self.schema_version()
        for target in range(version + 1, SCHEMA_VERSION + 1):
            # DDL is transactional in SQLite: a crash mid-step leaves the previous version intact.
            with self.write() as conn:
                MIGRATIONS[target](self)
                conn.execute(f"PRAGMA user_version={target}")

    def backup(self, folder: Path, label: str = "scheduled", keep: int = 10) -> Path:
        """A consistent online copy through the SQLite backup API; keeps the newest `keep` of its label."""
        fsafe.make_dir(folder)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = folder / f"ewg-{stamp}-{label}.db"
        n = 1
        while target.exists():
            n += 1
            target = folder / f"ewg-{stamp}-{label}-{n}.db"
        partial = folder / f".partial-{target.name}"  # never looks like a backup until it is one
        partial.unlink(missing_ok=True)
        fd = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        try:
            dest = sqlite3.connect(partial)
            try:
                self.connection().backup(dest)
            finally:
                dest.close()
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        # Rotation keeps the newest `keep` of this label only: scheduled backups never push out a
        # pre-migration one (the way back from an upgrade), whatever their number.
        same = sorted((_backup_order(p), p) for p in folder.glob("ewg-*.db") if _backup_label(p) == label)
        for _order, old in same[:-keep]:
            old.unlink(missing_ok=True)
        return target

    def integrity_check(self) -> str:
        return self.connection().execute("PRAGMA integrity_check").fetchone()[0]

    def vacuum(self) -> None:
        self.connection().execute("VACUUM")


# Migration 1 as it was first shipped, frozen: the DDL SQLModel generated from engine/models.py at
# schema 1. Later columns go into later migrations; tests/core/test_engine_schema.py checks that the
# migrated schema still matches the models.
_SCHEMA_1 = (
    """CREATE TABLE items (
    id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    parent_id VARCHAR,
    source VARCHAR DEFAULT '' NOT NULL,
    show VARCHAR DEFAULT '' NOT NULL,
    title VARCHAR DEFAULT '' NOT NULL,
    stage VARCHAR,
    next_stage VARCHAR,
    target_stage VARCHAR DEFAULT '' NOT NULL,
    status VARCHAR DEFAULT 'queued' NOT NULL,
    progress FLOAT DEFAULT '0.0' NOT NULL,
    progress_message VARCHAR DEFAULT '' NOT NULL,
    heartbeat_at FLOAT,
    progress_at FLOAT,
    started_at FLOAT,
    lease_owner VARCHAR,
    lease_token INTEGER DEFAULT '0' NOT NULL,
    lease_expires_at FLOAT,
    cancel_requested VARCHAR,
    cancel_requested_at FLOAT,
    attempts INTEGER DEFAULT '0' NOT NULL,
    rescues INTEGER DEFAULT '0' NOT NULL,
    next_attempt_at FLOAT DEFAULT '0.0' NOT NULL,
    error_class VARCHAR,
    error_message VARCHAR,
    error_detail VARCHAR,
    error_suggestion VARCHAR,
    error_at FLOAT,
    verdict VARCHAR,
    blocked_reason VARCHAR,
    deadline_extension FLOAT DEFAULT '0.0' NOT NULL,
    clip_start FLOAT,
    clip_end FLOAT,
    created_at FLOAT DEFAULT '0.0' NOT NULL,
    updated_at FLOAT DEFAULT '0.0' NOT NULL,
    PRIMARY KEY (id)
)""",
    """CREATE INDEX ix_items_kind ON items (kind)""",
    """CREATE INDEX ix_items_parent_id ON items (parent_id)""",
    """CREATE TABLE attempts (
    id INTEGER NOT NULL,
    item_id VARCHAR NOT NULL,
    stage VARCHAR NOT NULL,
    number INTEGER NOT NULL,
    worker VARCHAR NOT NULL,
    lease_token INTEGER NOT NULL,
    started_at FLOAT NOT NULL,
    ended_at FLOAT,
    outcome VARCHAR,
    error_class VARCHAR,
    error_message VARCHAR,
    error_detail VARCHAR,
    decision VARCHAR,
    log_tail VARCHAR,
    duration FLOAT,
    spent BOOLEAN DEFAULT '1' NOT NULL,
    PRIMARY KEY (id)
)""",
    """CREATE TABLE checkpoints (
    item_id VARCHAR NOT NULL,
    stage VARCHAR NOT NULL,
    manifest VARCHAR DEFAULT '{}' NOT NULL,
    created_at FLOAT DEFAULT '0.0' NOT NULL,
    stale BOOLEAN DEFAULT '0' NOT NULL,
    PRIMARY KEY (item_id, stage)
)""",
    """CREATE TABLE events (
    id INTEGER NOT NULL,
    at FLOAT NOT NULL,
    actor VARCHAR NOT NULL,
    verb VARCHAR NOT NULL,
    selection VARCHAR DEFAULT '' NOT NULL,
    reason VARCHAR DEFAULT '' NOT NULL,
    affected VARCHAR DEFAULT '[]' NOT NULL,
    "before" VARCHAR DEFAULT '{}' NOT NULL,
    "after" VARCHAR DEFAULT '{}' NOT NULL,
    result VARCHAR DEFAULT '' NOT NULL,
    PRIMARY KEY (id)
)""",
    """CREATE INDEX ix_events_verb ON events (verb)""",
    """CREATE INDEX ix_events_at ON events (at)""",
    """CREATE TABLE engine_state (
    "key" VARCHAR NOT NULL,
    value VARCHAR DEFAULT '' NOT NULL,
    reason VARCHAR DEFAULT '' NOT NULL,
    actor VARCHAR DEFAULT '' NOT NULL,
    at FLOAT DEFAULT '0.0' NOT NULL,
    PRIMARY KEY ("key")
)""",
    """CREATE TABLE engines (
    owner VARCHAR NOT NULL,
    host VARCHAR NOT NULL,
    pid INTEGER NOT NULL,
    started_at FLOAT NOT NULL,
    heartbeat_at FLOAT NOT NULL,
    workers INTEGER NOT NULL,
    busy INTEGER DEFAULT '0' NOT NULL,
    state VARCHAR DEFAULT 'running' NOT NULL,
    executions INTEGER DEFAULT '0' NOT NULL,
    PRIMARY KEY (owner)
)""",
    """CREATE TABLE services (
    name VARCHAR NOT NULL,
    ok BOOLEAN DEFAULT '1' NOT NULL,
    message VARCHAR DEFAULT '' NOT NULL,
    checked_at FLOAT DEFAULT '0.0' NOT NULL,
    since FLOAT DEFAULT '0.0' NOT NULL,
    PRIMARY KEY (name)
)""",
    """CREATE TABLE health (
    id INTEGER NOT NULL,
    at FLOAT NOT NULL,
    cpu_percent FLOAT NOT NULL,
    memory_percent FLOAT NOT NULL,
    disk_free_mb FLOAT NOT NULL,
    db_disk_free_mb FLOAT NOT NULL,
    time_to_full_s FLOAT,
    PRIMARY KEY (id)
)""",
    """CREATE INDEX ix_health_at ON health (at)""",
    """CREATE INDEX ix_items_ready ON items (next_attempt_at, id) WHERE status IN ('queued','retrying')""",
    """CREATE INDEX ix_items_kind_status ON items (kind, status, id)""",
    """CREATE INDEX ix_attempts_item ON attempts (item_id, id)""",
    """CREATE INDEX ix_attempts_ended ON attempts (ended_at)""",
)


def _migration_1(store: Store) -> None:
    """The initial schema, plus the hot-path indexes."""
    conn = store.connection()
    for statement in _SCHEMA_1:
        conn.execute(statement)


def _migration_2(store: Store) -> None:
    """Indexes for the console: windows deep in a 100k list and per-stage counts without a table scan."""
    conn = store.connection()
    for col in ("id", "status", "stage", "show", "updated_at", "error_class", "verdict"):
        name = "ix_items_kind_id" if col == "id" else f"ix_items_kind_{col}"
        extra = "" if col == "id" else ", id"
        conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON items (kind, {col}{extra})")
    conn.execute("CREATE INDEX IF NOT EXISTS ix_items_counts ON items (kind, stage, next_stage, status)")


def _migration_3(store: Store) -> None:
    """Drop what the engine paid for on every write and no query reads.

    SQLite rewrites an index entry whenever its column is in an UPDATE's SET list, even to the same
    value, and the hot path sets updated_at, error_class and verdict on every claim or completion.
    The console never sorts by updated_at, error_class or show, and no query reads (kind, stage, id):
    the stage filter counts on ix_items_counts and pages on ix_items_kind_id. Those indexes go; so
    does ix_attempts_item_id, a prefix of ix_attempts_item (item_id, id) written again by every claim.
    The stuck filter and count (`verdict IS NOT NULL`) get a partial index that a NULL verdict never
    touches.
    """
    conn = store.connection()
    for name in (
        "ix_items_kind_updated_at",
        "ix_items_kind_error_class",
        "ix_items_kind_show",
        "ix_items_kind_stage",
        "ix_items_kind_verdict",
        "ix_attempts_item_id",
    ):
        conn.execute(f"DROP INDEX IF EXISTS {name}")
    conn.execute("CREATE INDEX IF NOT EXISTS ix_items_stuck ON items (kind, id) WHERE verdict IS NOT NULL")


def _migration_4(store: Store) -> None:
    """No table changes: version 4 says that an attempt's row is written when the attempt ends, from
    its lease (Store.claim_batch, Unit.close_attempt). An older ewg closes attempts only by
    updating a row opened at the claim, so on leases taken by this version it would record nothing;
    the version check makes it refuse this workspace instead ("from a newer ewg")."""


def _migration_5(store: Store) -> None:
    """The boundary: a workspace identity and the recorded stage process of a running attempt.

    `workspace.identity` is a random id made once per database; the items root carries it in its
    ownership marker, so nothing deletes in a folder that belongs to another database. `stage_pid`
    and `stage_pgid` name the process group a command stage runs in, written with the lease, so a
    rescue can kill a dead owner's orphaned stage before the item runs again.
    """
    conn = store.connection()
    # Written to be re-run safely, like every step after the frozen first one.
    conn.execute(
        "CREATE TABLE IF NOT EXISTS workspace (\"key\" VARCHAR NOT NULL, value VARCHAR DEFAULT '' NOT NULL,"
        ' PRIMARY KEY ("key"))'
    )
    conn.execute("INSERT OR IGNORE INTO workspace (key, value) VALUES ('identity', ?)", (uuid.uuid4().hex,))
    columns = {row[1] for row in conn.execute("PRAGMA table_info(items)")}
    for column in ("stage_pid", "stage_pgid"):
        if column not in columns:
            conn.execute(f"ALTER TABLE items ADD COLUMN {column} INTEGER")


def _migration_6(store: Store) -> None:
    """Intake identity: `items.fingerprint` names an episode's source by content (size and sampled
    SHA-256, engine.media.discovery), so a copied workspace, a lost scan-state file or a moved source
    never makes the same source a second episode. Looked up once per new file: a partial index that
    clips and older episodes (NULL) never touch."""
    conn = store.connection()
    columns = {row[1] for row in conn.execute("PRAGMA table_info(items)")}
    if "fingerprint" not in columns:
        conn.execute("ALTER TABLE items ADD COLUMN fingerprint VARCHAR")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS ix_items_fingerprint ON items (fingerprint) WHERE fingerprint IS NOT NULL"
    )


def _migration_7(store: Store) -> None:
    """Sorting the console by show, title or stage in SQL: (kind, column, id) indexes, so a window of a
    sorted 100k list is an index range, not a 200-600 ms scan and sort on every refresh. show and
    title never change after an item is made, and stage once per completed stage, so the hot path pays
    little; the columns that change on every claim or heartbeat (progress, attempts, started_at,
    verdict) and error_class stay unindexed and sort by a scan (fast on the filtered sets they are
    used on, and the console reads less often while its reads are slow)."""
    conn = store.connection()
    for column in ("show", "title", "stage"):
        conn.execute(f"CREATE INDEX IF NOT EXISTS ix_items_kind_{column} ON items (kind, {column}, id)")


MIGRATIONS = {
    1: _migration_1,
    2: _migration_2,
    3: _migration_3,
    4: _migration_4,
    5: _migration_5,
    6: _migration_6,
    7: _migration_7,
}


_BACKUP_RE = re.compile(r"^ewg-(?P<stamp>\d{8}T\d{6}Z)-(?P<label>.+?)(?:-(?P<n>\d+))?\.db$")


def _backup_label(path: Path) -> str | None:
    m = _BACKUP_RE.match(path.name)
    return m["label"] if m else None


def _backup_order(path: Path) -> tuple[str, int]:
    """Oldest first: the time stamp in the name, then, within one second (whose names are reused once
    rotated away), the file's modification time."""
    m = _BACKUP_RE.match(path.name)
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        mtime = 0
    return (m["stamp"] if m else "", mtime)
