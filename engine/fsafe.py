"""Owner-only, atomic, no-follow creation of the files and folders ewg makes (ARCHITECTURE.md contract 7).

One place for how ewg creates what it owns, so nothing depends on the caller's umask and no planted
symbolic link can redirect a write:

- `write_text`/`write_bytes`/`write_json`: a temporary file in the same folder, opened
  `O_CREAT|O_EXCL|O_NOFOLLOW` with mode 0o600, written, fsynced and renamed over the name (a link
  there is replaced, never followed), then the folder is fsynced.
- `make_dir`: a folder made with mode 0o700 (missing parents too); a link at the path is refused.
- `ensure_dir_below`: the folders under a trusted base (the items folder) made one component at a
  time through `dir_fd` with `O_NOFOLLOW`; a link found in the way is removed (the link, never its
  target) and a real folder made in its place; anything else in the way is refused.
- `exposure`: names a path another user can write (mode bits or owner) and the command that fixes it.

The command line also sets umask 0o077 (`ewg_tui/cli.py`), so files a stage writes are owner-only
too; `private_tree` strips group and other bits from a checkpoint before it is published, for an
engine embedded in a process with a looser umask.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("ewg.fsafe")

FILE_MODE = 0o600
DIR_MODE = 0o700
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC


class UnsafePath(Exception):
    """ewg would write through a symbolic link, or into a path another user can write; the message says
    which path and how to fix it."""


# -- files -----------------------------------------------------------------------------------------
def _open_dir(folder: Path) -> int:
    return os.open(folder, _DIR_FLAGS)


def write_bytes(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace `path` atomically with `data`: owner-only, durable, and never through a link at `path`."""
    path = Path(path)
    dfd = _open_dir(path.parent)
    try:
        tmp = f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode, dir_fd=dfd)
        try:
            try:
                os.fchmod(fd, mode)  # exactly `mode`, whatever the umask took away or left
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)  # a link at the name is replaced
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
            raise
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_text(path: Path, text: str, mode: int = FILE_MODE) -> None:
    write_bytes(path, text.encode("utf-8"), mode)


def write_json(path: Path, data: Any, mode: int = FILE_MODE, **dumps: Any) -> None:
    write_text(path, json.dumps(data, **dumps), mode)


# -- folders ---------------------------------------------------------------------------------------
def make_dir(path: Path, mode: int = DIR_MODE) -> Path:
    """A folder at `path` (and any missing parents), made owner-only. An existing folder is kept as it is;
    a link or a file at `path` is refused (UnsafePath), never followed."""
    path = Path(path)
    missing = []
    probe = path
    while True:
        try:
            st = os.lstat(probe)
        except FileNotFoundError:
            missing.append(probe)
            if probe.parent == probe:
                break
            probe = probe.parent
            continue
        if probe == path:
            _refuse_non_dir(path, st)
        break
    for folder in reversed(missing):
        try:
            os.mkdir(folder, mode)
        except FileExistsError:
            _refuse_non_dir(folder, os.lstat(folder))
    return path


def _refuse_non_dir(path: Path, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(
            f"{path} is a symbolic link; ewg does not create its folders through links. "
            f"Remove the link (rm {path}) or point ewg at the real folder; nothing was changed."
        )
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{path} exists and is not a folder; move it away. Nothing was changed.")


def ensure_dir_below(base: Path, path: Path, mode: int = DIR_MODE) -> Path:
    """Make `path` and the folders between it and `base`, each owner-only and opened with O_NOFOLLOW
    relative to its parent. `base` (the items folder, chosen by the workspace's owner) is trusted and
    made when missing. A link found below it is replaced by a real folder: the link is removed, its
    target is never touched."""
    base, path = Path(base), Path(path)
    parts = path.relative_to(base).parts
    if not os.path.isdir(base):
        make_dir(base, mode)
    fd = _open_dir(base)
    try:
        for name in parts:
            if name in ("", ".", ".."):
                raise UnsafePath(f"{path}: {name!r} is not a folder name ewg creates")
            fd = _step(fd, name, mode, base)
    finally:
        os.close(fd)
    return path


def _step(parent: int, name: str, mode: int, base: Path) -> int:
    """Open (making it first if needed) the folder `name` in the open folder `parent`; closes `parent`."""
    try:
        for _ in range(3):  # a link replaced by a folder, and a second look; more means a race with someone
            try:
                os.mkdir(name, mode, dir_fd=parent)
            except FileExistsError:
                pass
            try:
                return os.open(name, _DIR_FLAGS | _NOFOLLOW, dir_fd=parent)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
            st = os.lstat(name, dir_fd=parent)
            if not stat.S_ISLNK(st.st_mode):
                raise UnsafePath(
                    f"{name!r} under {base} is a file where ewg makes a folder; move it away."
                ) from None
            target = os.readlink(name, dir_fd=parent)
            os.unlink(name, dir_fd=parent)
            log.warning(
                "removed a symbolic link %r -> %r under %s: ewg never writes through links",
                name,
                target,
                base,
            )
        raise UnsafePath(f"{name!r} under {base} keeps being replaced by a link; someone else writes there.")
    finally:
        os.close(parent)


def remove_link(path: Path) -> bool:
    """Remove `path` if it is a symbolic link (its target is never touched); True if one was removed."""
    try:
        if not os.path.islink(path):
            return False
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def private_tree(folder: Path) -> None:
    """Strip group and other permission bits from everything under `folder` (links are not followed):
    what a stage wrote under a loose umask is owner-only before it becomes a checkpoint."""
    for root, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            st = os.lstat(os.path.join(root, name))
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                os.chmod(os.path.join(root, name), stat.S_IMODE(st.st_mode) & ~0o077)
    st = os.lstat(folder)
    if st.st_mode & 0o077 and not stat.S_ISLNK(st.st_mode):
        os.chmod(folder, stat.S_IMODE(st.st_mode) & ~0o077)


# -- who else can write ----------------------------------------------------------------------------
def user_name(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _plain_user(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@dataclass(frozen=True)
class Exposure:
    """A path another account can change: what is wrong and the command that fixes it."""

    path: Path
    why: str
    fix: str

    @property
    def text(self) -> str:
        return f"{self.path} {self.why} (fix: {self.fix})"


def exposure(path: Path, *, link_ok: bool = True) -> Exposure | None:
    """Why another user can write `path` (writable by group or others, or owned by another account),
    or None when only its owner, you, can. A missing path is None. `link_ok=False` also refuses a link
    at `path` (a planted `ewg.db-wal` link would redirect SQLite's writes)."""
    path = Path(path)
    try:
        lst = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(lst.st_mode) and not link_ok:
        return Exposure(path, "is a symbolic link where ewg keeps a file of its own", f"rm {path}")
    try:
        st = os.stat(path)
    except FileNotFoundError:  # a dangling link
        return Exposure(path, "is a symbolic link to nothing", f"rm {path}")
    me = os.geteuid()
    if st.st_uid != me:
        return Exposure(
            path,
            f"belongs to {user_name(st.st_uid)}, not to you ({user_name(me)}), so its owner can change it",
            f"run ewg as its owner (sudo -u {_plain_user(st.st_uid)} ewg ...), or make it yours: "
            f"chown {_plain_user(me)} {path}",
        )
    loose = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if loose:
        who = {stat.S_IWGRP: "its group", stat.S_IWOTH: "every user"}.get(loose, "its group and every user")
        return Exposure(path, f"is writable by {who} ({stat.filemode(st.st_mode)})", f"chmod go-w {path}")
    return None
