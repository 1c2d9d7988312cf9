"""Finding new episodes in the source folders (one folder per show).

`scan_sources()` is what `ewg scan` calls. The rules, in order:

* **Folders.** `shows` maps a show name to its folder; `root` adds every
  sub-folder of root as a show named after the folder. Relative paths are
  relative to the workspace. Files are matched against `include` globs and
  dropped by `exclude` globs (matched on the name and on the path relative to
  the show folder); sub-folders are searched recursively.
* **Stability.** A file is taken only when its size and mtime have not changed
  for `stable_seconds`. The first time a file is seen, its mtime counts as the
  moment it last changed, so a file copied long ago is taken at once while one
  being written now (fresh mtime) waits; any later change of size or mtime
  restarts the window from the scan that saw it. The last-seen fingerprints live
  in a small JSON state file in the workspace (`state_file`).
* **Identity.** `{show}_ep{NNN}_{YYYY-MM-DD}`: show = slug of the show name
  (lowercase letters, digits and `-`); NNN = the episode number in the file
  name (`ep12`, `episode 12`, `e12`, `#12`, else the last number that is not
  part of a date; 000 when there is none), at least three digits; date = the
  file's mtime in UTC when it is first seen.
* **Collisions.** An id, once given to a path, stays with that path (kept in
  the state file), even if the file is later touched. A new file whose id is
  already taken gets `-2`, `-3`, ... (the lowest free suffix); new files in
  one scan are numbered in path order. Nothing is ever replaced or dropped.
* **Cheap rescans.** The fingerprint is size + mtime + a hash of three 64 KiB
  samples (start, middle, end); the samples are re-read only when size or
  mtime changed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATE_VERSION = 1
DEFAULT_INCLUDE = ("*.mp4", "*.mov", "*.mkv", "*.m4v", "*.webm", "*.avi", "*.mp3", "*.m4a", "*.wav")
DEFAULT_EXCLUDE = (".*", "*.part", "*.partial", "*.tmp", "*.crdownload", "~*")
SAMPLE = 64 * 1024

_EP_NUMBER = re.compile(r"(?:\bep(?:isode)?|\be|#)[\s._-]*(\d{1,6})", re.IGNORECASE)
_DATES = re.compile(r"\d{4}[-_.]?\d{2}[-_.]?\d{2}")
_DIGITS = re.compile(r"\d+")


class ScanConfigError(ValueError):
    """The source-folder settings cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class SourceFolders:
    shows: dict[str, Path]
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    stable_seconds: float = 30.0
    state_file: Path = Path(".ewg-scan.json")

    @classmethod
    def from_mapping(cls, ws_root: Path, cfg: Mapping[str, Any]) -> SourceFolders:
        known = {"root", "shows", "include", "exclude", "stable_seconds", "state_file"}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ScanConfigError(
                f"source folders: unknown key(s) {', '.join(unknown)}; known keys are "
                f"{', '.join(sorted(known))}"
            )
        shows: dict[str, Path] = {}
        root = cfg.get("root")
        if root:
            root_path = _under(ws_root, root)
            if not root_path.is_dir():
                raise ScanConfigError(
                    f"source folders: root {str(root_path)!r} is not a folder; create it or fix `root`"
                )
            for child in sorted(root_path.iterdir()):
                if child.is_dir() and not child.name.startswith("."):
                    shows[child.name] = child
        for name, folder in dict(cfg.get("shows") or {}).items():
            if not show_slug(str(name)):
                raise ScanConfigError(
                    f"source folders: show name {name!r} has no letters or digits to make an id from"
                )
            shows[str(name)] = _under(ws_root, folder)
        if not shows and not root:
            raise ScanConfigError(
                "source folders: set `root` (one sub-folder per show) or `shows` (name = folder)"
            )
        stable = cfg.get("stable_seconds", 30.0)
        if isinstance(stable, bool) or not isinstance(stable, (int, float)) or stable < 0:
            raise ScanConfigError(
                f"source folders: stable_seconds must be a number of seconds >= 0, got {stable!r}"
            )
        for key in ("include", "exclude"):
            value = cfg.get(key)
            if value is not None and (isinstance(value, str) or not all(isinstance(v, str) for v in value)):
                raise ScanConfigError(
                    f'source folders: {key} must be a list of globs, e.g. ["*.mp4"], got {value!r}'
                )
        slugs: dict[str, str] = {}
        for name in shows:
            other = slugs.setdefault(show_slug(name), name)
            if other != name:
                raise ScanConfigError(
                    f"source folders: shows {other!r} and {name!r} would share the id prefix "
                    f"{show_slug(name)!r}; rename one folder"
                )
        return cls(
            shows=shows,
            include=tuple(cfg.get("include") or DEFAULT_INCLUDE),
            exclude=tuple(cfg["exclude"]) if cfg.get("exclude") is not None else DEFAULT_EXCLUDE,
            stable_seconds=float(stable),
            state_file=Path(cfg.get("state_file") or ".ewg-scan.json"),
        )


def _under(ws_root: Path, p: Any) -> Path:
    path = Path(os.path.expanduser(str(p)))
    return path if path.is_absolute() else Path(ws_root) / path


def show_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def episode_number(file_name: str) -> int:
    """The episode number in a file name (see the module rules); 0 when there is none."""
    stem = Path(file_name).stem
    m = _EP_NUMBER.search(stem)
    if m:
        return int(m.group(1))
    numbers = _DIGITS.findall(_DATES.sub(" ", stem))
    return int(numbers[-1]) if numbers else 0


def make_item_id(slug: str, number: int, mtime: float) -> str:
    day = datetime.fromtimestamp(mtime, tz=UTC).strftime("%Y-%m-%d")
    return f"{slug}_ep{number:03d}_{day}"


def humanise_title(stem: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[_]+", " ", stem)).strip()


def sampled_hash(path: Path, size: int) -> str:
    """blake2b of the size and three 64 KiB samples: changes when content does, reads at most 192 KiB."""
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as fh:
        for offset in sorted({0, max(0, size // 2 - SAMPLE // 2), max(0, size - SAMPLE)}):
            fh.seek(offset)
            h.update(fh.read(SAMPLE))
    return h.hexdigest()


@dataclass
class ScanEntry:
    item_id: str
    source: Path
    show: str
    title: str
    fingerprint: str
    new: bool  # first scan that found this file ready

    def as_tuple(self) -> tuple[str, str, str, str]:
        return (self.item_id, str(self.source), self.show, self.title)


@dataclass
class ScanResult:
    ready: list[ScanEntry] = field(default_factory=list)
    waiting: list[tuple[Path, str]] = field(default_factory=list)  # (file, why it is not taken yet)
    missing_folders: list[tuple[str, Path]] = field(default_factory=list)


def _matches(rel: str, name: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, g) or fnmatch.fnmatch(rel, g) for g in globs)


def _load_state(path: Path) -> dict:
    """The scanner's memory; a missing or damaged file starts afresh (costing one stability window,
    and ids already handed out are recomputed by the same rules)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        state = None
    if isinstance(state, dict) and state.get("version") == STATE_VERSION:
        return state
    return {"version": STATE_VERSION, "files": {}, "ids": {}}


def _save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def scan(ws_root: Path, folders_config: Mapping[str, Any] | SourceFolders, now: float) -> ScanResult:
    """Everything `scan_sources` knows: files ready (with fingerprints) and files still waiting."""
    ws_root = Path(ws_root)
    cfg = (
        folders_config
        if isinstance(folders_config, SourceFolders)
        else SourceFolders.from_mapping(ws_root, folders_config)
    )
    state_path = _under(ws_root, cfg.state_file)
    state = _load_state(state_path)
    files: dict[str, dict] = state["files"]
    ids: dict[str, str] = state["ids"]  # path -> id, permanent
    taken = set(ids.values())
    result = ScanResult()
    seen: set[str] = set()
    fresh: list[tuple[str, str, Path, str]] = []  # (path, show, file, fingerprint) ready but without id yet
    for show, folder in sorted(cfg.shows.items()):
        if not folder.is_dir():
            result.missing_folders.append((show, folder))
            continue
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(folder).as_posix()
            if any(part.startswith(".") for part in Path(rel).parts[:-1]):
                continue
            if not _matches(rel, path.name, cfg.include) or _matches(rel, path.name, cfg.exclude):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue  # vanished between listing and stat
            key = str(path)
            seen.add(key)
            last = files.get(key)
            if last and last["size"] == st.st_size and last["mtime_ns"] == st.st_mtime_ns:
                since, digest = last["since"], last.get("hash")
            else:
                since = min(now, st.st_mtime) if last is None else now
                digest = None
            age = now - since
            if digest is None and age >= cfg.stable_seconds:
                try:
                    digest = sampled_hash(path, st.st_size)
                except OSError as exc:
                    result.waiting.append((path, f"cannot be read yet: {exc}"))
                    continue
            files[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "since": since, "hash": digest}
            if age < cfg.stable_seconds:
                result.waiting.append(
                    (
                        path,
                        f"size or mtime changed {age:.0f} s ago; waiting until they have been "
                        f"stable for {cfg.stable_seconds:.0f} s (still being copied?)",
                    )
                )
                continue
            fingerprint = f"{st.st_size}:{st.st_mtime_ns}:{digest}"
            if key in ids:
                result.ready.append(
                    ScanEntry(ids[key], path, show, humanise_title(path.stem), fingerprint, False)
                )
            else:
                fresh.append((key, show, path, fingerprint))
    for key, show, path, fingerprint in sorted(fresh):
        base = make_item_id(show_slug(show), episode_number(path.name), os.stat(path).st_mtime)
        item_id, n = base, 1
        while item_id in taken:
            n += 1
            item_id = f"{base}-{n}"
        taken.add(item_id)
        ids[key] = item_id
        result.ready.append(ScanEntry(item_id, path, show, humanise_title(path.stem), fingerprint, True))
    for key in list(files):
        if key not in seen:
            del files[key]  # ids stay: a file that comes back gets its old id
    _save_state(state_path, state)
    result.ready.sort(key=lambda e: e.item_id)
    return result


def scan_sources(
    ws_root: Path, folders_config: Mapping[str, Any] | SourceFolders, now: float
) -> list[tuple[str, str, str, str]]:
    """(item_id, source_path, show, title) of every file that is ready, new or not; ids are stable across scans.

    `folders_config` is a mapping with keys root, shows, include, exclude,
    stable_seconds, state_file (see the module docstring), or a SourceFolders.
    """
    return [entry.as_tuple() for entry in scan(ws_root, folders_config, now).ready]
