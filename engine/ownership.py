"""Deletes are confined to what ewg owns (ARCHITECTURE.md contracts 7 and 8, and "The boundary").

The items root carries an ownership marker, `<items>/.ewg-items`, holding the identity of the
database it belongs to (`Store.identity()`, schema 5). It is written when a workspace is created and
adopted when an older workspace is opened, but only while the root holds nothing except entries that
look like ewg's own. Before anything is deleted under the root (the start-up sweep, `deep-clean`,
`clear-cache` and the other verbs' file work, `doctor --repair`), `confirm` checks that the marker
names this workspace's database. A root that holds other people's files (`items = "."`), or that a
second workspace points at, is refused with a sentence that says why and what to change. Hosts of one
shared database see the same identity, so a root shared on purpose passes.

Inside an owned root only ewg-looking entries are touched: the folder of an item the database knows,
the `.tmp-*`, `.old-*` and `.failed-*` folders and the stage checkpoints inside item folders, and a
folder no item names only when everything in it looks like an item folder's content.

`.ewg-demo` marks a folder that `ewg demo` made, with the identity of its database, so only such a
folder is ever replaced. Markers are written with `write_marker`: O_CREAT|O_EXCL|O_NOFOLLOW and mode
0600, never through a symlink and never over an existing file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from .config import ConfigError
from .pipeline import CLIP_STAGES, EPISODE_STAGES

ITEMS_MARKER = ".ewg-items"
DEMO_MARKER = ".ewg-demo"
_MARKER_MAX = 256  # an identity is 32 hex digits; anything longer is not a marker ewg wrote
_STAGES = frozenset(EPISODE_STAGES) | frozenset(CLIP_STAGES)
_KEPT_RE = re.compile(r"^\.(tmp|old|failed)-[a-z]+-\d+(-.*)?$")  # checkpoints._TMP_RE and .failed-STAGE-N
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")  # workspace.ITEM_ID_RE (no import: no cycle)


class OwnershipError(ConfigError):
    """A folder ewg would delete in is not provably its own; the message says why and what to change."""


def write_marker(path: Path, text: str) -> None:
    """Create a marker file, owner-only, never following a symlink nor replacing an existing file."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (text + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_marker(path: Path) -> str | None:
    """A marker's text; None when there is none. A symlink or a non-file is not a marker."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError:  # ELOOP: a symlink in its place
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a folder in its place
            return ""
        data = os.read(fd, _MARKER_MAX + 1)
    finally:
        os.close(fd)
    if len(data) > _MARKER_MAX:
        return ""
    return data.decode("ascii", errors="replace").strip()


# -- what looks like ewg's own ---------------------------------------------------------------------
def is_kept_name(name: str) -> bool:
    """A temporary, replaced or kept-failed attempt folder's name (`.tmp-STAGE-TOKEN` and the like)."""
    return bool(_KEPT_RE.match(name))


def _is_plain_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def looks_like_item_dir(path: Path) -> bool:
    """True when everything in the folder is what ewg puts in an item folder, and something proves it:
    a stage checkpoint with its manifest, or an attempt's temporary, replaced or kept-failed folder."""
    if not (_is_plain_dir(path) and _ID_RE.match(path.name) and ".." not in path.name):
        return False
    proof = False
    try:
        children = list(path.iterdir())
    except OSError:
        return False
    for child in children:
        if not _is_plain_dir(child):
            return False
        if is_kept_name(child.name):
            proof = True
        elif child.name in _STAGES:
            if not (child / "manifest.json").is_file():
                return False
            proof = True
        elif child.name != "cache":
            return False
    return proof


def foreign_entries(root: Path, known: Collection[str]) -> list[str]:
    """Entries of the root that ewg did not make: not the marker, not a known item's folder, not a
    folder that looks like an item folder."""
    foreign = []
    for entry in sorted(root.iterdir()):
        if entry.name == ITEMS_MARKER and entry.is_file() and not entry.is_symlink():
            continue
        if entry.name in known and _is_plain_dir(entry):
            continue
        if looks_like_item_dir(entry):
            continue
        foreign.append(entry.name + ("/" if entry.is_dir() else ""))
    return foreign


# -- the items root ----------------------------------------------------------------------------------
def claim_new(root: Path, identity: str) -> None:
    """At creation: mark the items root as this database's; a root another database owns is refused."""
    root.mkdir(parents=True, exist_ok=True)
    marker = read_marker(root / ITEMS_MARKER)
    if marker is None:
        write_marker(root / ITEMS_MARKER, identity)
    elif marker != identity:
        raise OwnershipError(_mismatch(root, marker, identity, creating=True))


Known = Callable[[], Collection[str]]  # the ids of the items the database knows, read only when needed


def adopt(root: Path, identity: str, known: Known) -> bool:
    """For a workspace made before markers: mark its items root when it holds only ewg-looking entries.
    True when the root is (now) marked with this identity."""
    marker = read_marker(root / ITEMS_MARKER)
    if marker is not None:
        return marker == identity
    if not _is_plain_dir(root) or foreign_entries(root, known()):
        return False
    with contextlib.suppress(FileExistsError):  # another process adopted it a moment ago
        write_marker(root / ITEMS_MARKER, identity)
    return read_marker(root / ITEMS_MARKER) == identity


def confirm(root: Path, identity: str, known: Known, *, workspace: Path | None = None) -> None:
    """Before deleting under `root`: the marker must name this database (an unmarked root that holds
    only ewg's entries is adopted). Raises OwnershipError saying why and what to change."""
    why = problem(root, identity, known, workspace=workspace)
    if why:
        raise OwnershipError(why)
    if root.exists() and not adopt(root, identity, known):
        raise OwnershipError(f"The ownership marker of {root} could not be written; nothing was deleted.")


def problem(root: Path, identity: str, known: Known, *, workspace: Path | None = None) -> str | None:
    """Why ewg may not delete under `root` (None: it may, after adopting an unmarked root). Changes nothing."""
    if not root.exists():
        return None  # nothing to delete in
    if root.is_symlink() or not root.is_dir():
        return (
            f"The items folder {root} is {'a symlink' if root.is_symlink() else 'not a folder'}, and ewg "
            "deletes nothing through it; nothing was deleted. Point [paths] items at a real folder of its own."
        )
    marker = read_marker(root / ITEMS_MARKER)
    if marker == identity:
        return None
    if marker:
        return _mismatch(root, marker, identity)
    if marker == "":
        return (
            f"{root / ITEMS_MARKER} is not a marker ewg wrote (a symlink, a folder or too long), so ewg deletes "
            f"nothing in {root}; nothing was deleted. Remove it and run the command again."
        )
    foreign = foreign_entries(root, known())
    if not foreign:
        return None
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    if workspace is not None and root.resolve() == Path(workspace).resolve():
        where = f'The items folder {root} is the workspace folder itself (items = ".")'
    else:
        where = f"The items folder {root} has no ownership marker ({ITEMS_MARKER})"
    return (
        f"{where}, and it holds entries ewg did not make: {shown}. ewg deletes nothing in a folder it "
        "cannot show it owns; nothing was deleted. Give the workspace an items folder of its own "
        '([paths] items = "items" in ewg.toml, then move the item folders there), or move those entries out.'
    )


def _mismatch(root: Path, marker: str, identity: str, creating: bool = False) -> str:
    what = "cannot use it" if creating else "deletes nothing in it"
    return (
        f"The items folder {root} belongs to another ewg database (its marker {ITEMS_MARKER} names "
        f"{marker[:12]}..., this workspace's database is {identity[:12]}...): two workspaces share one items "
        f"folder, so ewg {what}; nothing was deleted. Give each workspace its own [paths] items folder. "
        "Hosts that share one database on purpose share its identity and are not refused."
    )


# -- deleting ----------------------------------------------------------------------------------------
def remove_tree(path: Path) -> None:
    """Remove a folder ewg made (a symlink in its place is unlinked, its target left alone)."""
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    try:
        os.rmdir(path)  # the common case: empty
    except FileNotFoundError:
        return
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


def remove_in_item(item_dir: Path, names: Iterable[str]) -> None:
    """Remove entries of one item folder: "" is the folder itself, a name with `*` a pattern.

    An item folder that is a symlink (planted after the start-up sweep) is never entered: the link
    itself may go, nothing is removed through it."""
    names = list(names)
    if item_dir.is_symlink():
        if "" in names:
            with contextlib.suppress(FileNotFoundError):
                item_dir.unlink()
        return
    for name in names:
        if name == "":
            remove_tree(item_dir)
        elif "*" in name:
            if _is_plain_dir(item_dir):
                for path in item_dir.glob(name):
                    remove_tree(path)
        else:
            remove_tree(item_dir / name)


# -- the demo folder ---------------------------------------------------------------------------------
def mark_demo(root: Path, identity: str) -> None:
    write_marker(root / DEMO_MARKER, identity)


def demo_marker(root: Path) -> str | None:
    return read_marker(root / DEMO_MARKER)


# -- a root shared by many hosts ---------------------------------------------------------------------
def check_shared_root(root: Path, identity: str, host: str) -> None:
    """Before an engine on a shared database claims work: the items folder on this host must be the
    one the database's other hosts use (its marker names the database), and rename within it must be
    atomic (a checkpoint is published by renaming its folder into place). OwnershipError says which
    and what to change; nothing is changed but a probe folder, removed again."""
    if not root.is_dir():
        raise OwnershipError(
            f"The items folder {root} does not exist on this host, but the database is shared with other "
            "hosts: mount the shared items folder there (the same one on every host), then start again."
        )
    marker = read_marker(root / ITEMS_MARKER)
    if marker != identity:
        seen = "has no ownership marker" if not marker else f"names another database ({marker[:12]}...)"
        raise OwnershipError(
            f"The items folder {root} on this host {seen}, so it is not the folder the database "
            f"({identity[:12]}...) writes its checkpoints to: mount the shared items folder at {root} "
            "(NFS or similar, the same on every host) before starting an engine here; nothing was changed."
        )
    probe = root / f".tmp-probe-{os.getpid()}-{host}"
    moved = root / f".old-probe-{os.getpid()}-{host}"
    try:
        probe.mkdir(mode=0o700)
        (probe / "x").write_bytes(b"ok")
        os.rename(probe, moved)
        atomic = moved.is_dir() and not probe.exists() and (moved / "x").read_bytes() == b"ok"
    except OSError as exc:
        atomic, why = False, exc.strerror or str(exc)
    else:
        why = "the renamed folder did not appear in one step"
    finally:
        for leftover in (probe, moved):
            with contextlib.suppress(OSError):
                shutil.rmtree(leftover)
    if not atomic:
        raise OwnershipError(
            f"Renaming a folder inside {root} does not work atomically on this host ({why}). ewg publishes "
            "each checkpoint by one rename, so this file system cannot hold shared items: use a mount "
            "with POSIX rename (NFS, CephFS, a local disk), then start again; nothing was changed."
        )
