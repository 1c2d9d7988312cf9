"""Atomic checkpoints (ARCHITECTURE.md contract 7).

A stage writes into a temporary directory inside its item's folder. To commit,
the engine fsyncs every file and the directory, renames it to
`<item>/<stage>/` and records the stage complete in the same database
transaction that checked the lease, so a kill -9 at any instant leaves either
the old state or the new one. Temporary names carry the lease token, so a
sweep never deletes the working directory of a live lease.

Nothing is written through a symbolic link planted in the items folder: the
folders are made with `fsafe.ensure_dir_below` (O_NOFOLLOW, one component at a
time), a link at a checkpoint's name is removed before the rename, and
`stale_links` finds the links the start-up sweep removes (never their targets).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from . import fsafe

MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
_TMP_RE = re.compile(r"^\.(tmp|old)-(?P<stage>[a-z]+)-(?P<token>\d+)(-.*)?$")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_manifest(folder: Path) -> dict:
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        files.append(
            {
                "path": path.relative_to(folder).as_posix(),
                "size": path.stat().st_size,
                "sha256": sha256_of(path),
            }
        )
    return {"files": files}


def _fsync_tree(folder: Path) -> None:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(item_dir: Path, stage: str, token: int) -> Path:
    """Where one attempt writes its outputs (the stage context creates it on first use)."""
    return item_dir / f"{TMP_PREFIX}{stage}-{token}"


def temp_dir(item_dir: Path, stage: str, token: int) -> Path:
    """A fresh, empty working directory for one attempt."""
    path = temp_path(item_dir, stage, token)
    fsafe.ensure_dir_below(item_dir.parent, item_dir)  # first: nothing below is looked at through a link
    if not fsafe.remove_link(path) and path.exists():
        shutil.rmtree(path)
    return fsafe.ensure_dir_below(item_dir.parent, path)


@dataclass
class Prepared:
    """A temporary output, fsynced and described, ready to be renamed into place."""

    tmp: Path | None
    final: Path
    manifest: dict

    @property
    def empty(self) -> bool:
        return not self.manifest["files"]


EMPTY_MANIFEST = json.dumps({"files": [], "skipped": False})  # what prepare(None, ...) records, as JSON


def prepare(tmp: Path | None, final: Path, skipped: bool = False) -> Prepared:
    """Describe and fsync an attempt's outputs; `tmp` None means the stage wrote nothing."""
    if tmp is None:
        return Prepared(None, final, {"files": [], "skipped": skipped})
    manifest = build_manifest(tmp)
    manifest["skipped"] = skipped
    if manifest["files"]:
        fsafe.private_tree(tmp)  # what the stage wrote under a loose umask becomes owner-only
        fsafe.write_text(tmp / MANIFEST, json.dumps(manifest, indent=1))  # a planted link is replaced
        _fsync_tree(tmp)
    return Prepared(tmp, final, manifest)


def publish(prepared: Prepared, token: int) -> None:
    """Rename the prepared output into place, replacing an older checkpoint of the stage."""
    final = prepared.final
    if final.parent.is_symlink():  # a link in place of the item folder: replaced, never written through
        fsafe.ensure_dir_below(final.parent.parent, final.parent)
    fsafe.remove_link(final)  # a link at the checkpoint's name is dropped, its target never touched
    if prepared.empty and not final.exists():  # nothing to put in place: no rename, no fsync
        return
    if prepared.tmp is not None and not prepared.tmp.exists() and final.exists():
        # Renamed by an earlier try of this same commit whose transaction then failed (a full disk):
        # the temporary name holds this lease's token, so nobody else could have moved it.
        return
    old = final.parent / f"{OLD_PREFIX}{final.name}-{token}"
    if final.exists():
        if not fsafe.remove_link(old) and old.exists():
            shutil.rmtree(old)
        os.rename(final, old)
    if prepared.empty:
        discard(prepared.tmp)
    else:
        os.rename(prepared.tmp, final)
    fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def discard(path: Path | None) -> None:
    if path is None or fsafe.remove_link(path):  # a link is removed as such, never followed
        return
    try:
        os.rmdir(path)  # the common case: an empty or already-published directory
    except FileNotFoundError:
        return
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


def failed_outputs(item_dir: Path) -> list[Path]:
    """An item's kept partial outputs of failed attempts (.failed-STAGE-TOKEN), oldest first."""
    if not item_dir.exists():
        return []
    kept = [p for p in item_dir.glob(".failed-*") if p.is_dir()]
    return sorted(kept, key=lambda p: (p.stat().st_mtime, p.name))


def rotate_failed(item_dir: Path, keep: int) -> None:
    """Keep the newest `keep` failed outputs of an item, so evidence kept by policy stays bounded."""
    kept = failed_outputs(item_dir)
    for old in kept[: max(0, len(kept) - keep)]:
        discard(old)


def verify(final: Path, manifest: dict) -> list[str]:
    """Problems with a recorded checkpoint on disk: missing files, wrong sizes or checksums."""
    problems = []
    for entry in manifest.get("files", []):
        path = final / entry["path"]
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"{path} has {path.stat().st_size} bytes, manifest says {entry['size']}")
        elif sha256_of(path) != entry["sha256"]:
            problems.append(f"{path} checksum differs from the manifest")
    return problems


def leftovers(items_root: Path) -> list[tuple[Path, str, str, int]]:
    """Temporary and replaced directories: (path, item_id, stage, token)."""
    found = []
    if not items_root.exists():
        return found
    for item_dir in items_root.iterdir():
        if item_dir.is_symlink() or not item_dir.is_dir():  # never listed through a link
            continue
        for child in item_dir.iterdir():
            m = _TMP_RE.match(child.name)
            if m:
                found.append((child, item_dir.name, m["stage"], int(m["token"])))
    return found


def stale_links(items_root: Path, known: Collection[str]) -> list[Path]:
    """Symbolic links where ewg keeps its own folders: in place of a known item's folder, and anything in
    a known item's folder. ewg makes none, and a write through one would land outside the workspace.
    Links under other names are someone else's (the items root may be the workspace folder)."""
    found: list[Path] = []
    if items_root.is_symlink() or not items_root.is_dir():
        return found
    known = known if isinstance(known, (set, frozenset, dict)) else set(known)
    # One listing of the folder, not a stat per known item: 100k items with few folders cost 2 s that way.
    with os.scandir(items_root) as entries:
        for entry in entries:
            if entry.name not in known:
                continue
            if entry.is_symlink():
                found.append(Path(entry.path))
            elif entry.is_dir(follow_symlinks=False):
                found.extend(child for child in Path(entry.path).iterdir() if child.is_symlink())
    return found


# -- reading a manifest back (ewg doctor, start-up) -------------------------------------------------
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest that cannot be trusted: not UTF-8, not JSON, or not the shape `prepare` writes."""


def parse_manifest(raw: bytes | str) -> dict:
    """A manifest as `prepare` wrote it, checked: UTF-8 JSON, every entry a relative path inside the
    checkpoint with a size and a sha256. Anything else is a ManifestError saying what is wrong."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(f"not valid UTF-8 (byte {exc.start})") from None
    try:
        manifest = json.loads(raw)
    except RecursionError:
        raise ManifestError("nested too deeply to be a manifest") from None
    except ValueError as exc:
        raise ManifestError(f"not JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.setdefault("files", []), list):
        raise ManifestError('not a manifest (an object with a "files" list)')
    for entry in manifest["files"]:
        if not isinstance(entry, dict):
            raise ManifestError("an entry of its file list is not an object")
        path, size, digest = entry.get("path"), entry.get("size"), entry.get("sha256")
        parts = path.split("/") if isinstance(path, str) else []
        if not parts or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ManifestError(f"file path {path!r} is not a plain path inside the checkpoint")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ManifestError(f"{path}: size {size!r} is not a byte count")
        if not isinstance(digest, str) or not _SHA256_RE.match(digest):
            raise ManifestError(f"{path}: {digest!r} is not a sha256")
    return manifest


def read_manifest(folder: Path) -> dict | None:
    """The manifest.json a published checkpoint folder carries (None when there is none)."""
    path = folder / MANIFEST
    try:
        if not path.is_file():
            return None
        raw = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot be read ({exc.strerror})") from None
    return parse_manifest(raw)


def sizes_match(final: Path, manifest: dict) -> bool:
    """The cheap half of `verify` (no hashing): every file there with the manifest's size."""
    for entry in manifest.get("files", []):
        path = final / entry["path"]
        try:
            if path.stat().st_size != entry["size"]:
                return False
        except OSError:
            return False
    return True
