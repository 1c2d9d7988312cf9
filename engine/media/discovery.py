"""Finding new episodes in the source folders (one folder per show).

`scan_sources()` is what `ewg scan` calls. The rules, in order:

* **Folders.** `shows` maps a show name to its folder; `root` adds every
  sub-folder of root as a show named after the folder. Relative paths are
  relative to the workspace. Files are matched against `include` globs and
  dropped by `exclude` globs (matched on the name and on the path relative to
  the show folder); sub-folders are searched recursively (links to folders are
  not followed, links to files are).
* **Stability.** A file is taken only when its size and mtime have not changed
  for `stable_seconds`. The first time a file is seen, its mtime counts as the
  moment it last changed, so a file copied long ago is taken at once while one
  being written now (fresh mtime) waits; any later change of size or mtime
  restarts the window from the scan that saw it. The last-seen size, mtime and
  content fingerprint live in a small JSON state file in the workspace
  (`state_file`).
* **Identity.** `{show}_ep{NNN}_{YYYY-MM-DD}`: show = slug of the show name
  (lowercase ASCII letters, digits and `-`, accents transliterated, at most 48
  characters; `show-` + a short hash of the name when it has no usable letter
  or digit); NNN = the episode number in the file name (`ep12`, `episode 12`,
  `e12`, `#12`, else the last number of at most six digits that is not part of
  a date; 000 when there is none), at least three digits; date = a real date
  in the file name (`2008-05-20`, `2008_05_20`, `2008.05.20`, `20080520`, as
  in the AI-EWG naming scheme), else the file's mtime in UTC. Two shows whose
  slugs collide: the first by name keeps the slug, the others get the slug
  plus a short hash of their name (reported once).
* **Same content, same episode.** The content fingerprint (size and SHA-256 of
  the first, middle and last MiB) names the source. A file whose path has no
  id yet but whose content is already an episode (a copy, a move, a lost state
  file, a copied workspace) gets that episode's id instead of a new one, so it
  never becomes a second episode. `scan()` asks a `Registry` (the database) as
  well as its own state. Empty files have no content identity.
* **Collisions.** An id, once given to a path, stays with that path (kept in
  the state file), even if the file is later touched. A new file whose id is
  already taken (in the state or in the registry) gets `-2`, `-3`, ... (the
  lowest free suffix); new files in one scan are numbered in path order.
  Nothing is ever replaced or dropped.
* **Bad entries.** An entry that cannot become an episode (a name that is not
  valid UTF-8, a folder that cannot be listed, a file that cannot be stat'ed)
  is skipped with a reason and every other file is still taken. Each distinct
  problem is in `ScanResult.problems` on every scan and in `new_problems` only
  on the first (the state file remembers what was reported).
* **Cheap rescans.** The fingerprint is re-read only when size or mtime
  changed; it reads at most 3 MiB of a file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import stat
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

from .. import fsafe  # standard library only, like this module
from ..text import is_utf8
from ..text import one_line as printable  # names shown to people go through engine/text.py

STATE_VERSION = 1
DEFAULT_INCLUDE = ("*.mp4", "*.mov", "*.mkv", "*.m4v", "*.webm", "*.avi", "*.mp3", "*.m4a", "*.wav")
DEFAULT_EXCLUDE = (".*", "*.part", "*.partial", "*.tmp", "*.crdownload", "~*")
# Three 1 MiB samples: 3 MiB read per settled file (about 2 ms of SHA-256 here; a full hash of a 3 GB
# episode is 2.3 s of CPU, and a lost state file would re-hash every source in the health thread).
SAMPLE = 1024 * 1024
SLUG_MAX = 48  # ids stay far below the 200 characters ITEM_ID_RE allows, clip suffixes included
NUMBER_MAX_DIGITS = 6  # a longer run of digits is a timestamp or a serial, not an episode number

_EP_NUMBER = re.compile(r"(?:\bep(?:isode)?|\be|#)[\s._-]*(\d{1,6})(?!\d)", re.IGNORECASE)
_DATES = re.compile(r"(?<!\d)\d{4}[-_.]?\d{2}[-_.]?\d{2}(?!\d)")  # date-shaped, valid or not
# A date in a name: one separator used twice (or none), not part of a longer run of digits.
_NAME_DATE = re.compile(r"(?<!\d)(19\d\d|2\d\d\d)([-_.]?)(\d\d)\2(\d\d)(?!\d)")
_DIGITS = re.compile(r"\d+")
# Letters NFKD does not decompose into ASCII.
_TRANSLITERATE = str.maketrans(
    {
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "ø": "o",
        "Ø": "O",
        "œ": "oe",
        "Œ": "OE",
        "đ": "d",
        "Đ": "D",
        "ł": "l",
        "Ł": "L",
        "þ": "th",
        "Þ": "TH",
        "ı": "i",
    }
)


_NOT_UTF8_FILE = "the file name is not valid UTF-8; skipped until it is renamed (e.g. with convmv)"
_NOT_UTF8_SHOW = "the show folder's name is not valid UTF-8; its files are skipped until it is renamed"


class ScanConfigError(ValueError):
    """The source-folder settings cannot be used; the message names the key and the fix."""


class Registry(Protocol):
    """What the database knows, so neither a lost state file nor a copy splits or merges episodes."""

    def episode_for(self, content: str) -> str | None:
        """The id of the episode whose source has this content fingerprint, if any."""

    def id_in_use(self, item_id: str) -> bool:
        """True when an item with this id exists."""


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
            try:
                children = sorted(root_path.iterdir())
            except OSError as exc:
                raise ScanConfigError(
                    f"source folders: root {str(root_path)!r} cannot be listed ({exc.strerror}); "
                    "fix its permissions or `root`"
                ) from None
            for child in children:
                if child.is_dir() and not child.name.startswith("."):
                    shows[child.name] = child
        for name, folder in dict(cfg.get("shows") or {}).items():
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


def _short_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=3).hexdigest()


def show_slug(name: str) -> str:
    """A readable ASCII slug of a show name; `show-` + a short stable hash when nothing readable is left."""
    ascii_name = unicodedata.normalize("NFKD", name.translate(_TRANSLITERATE)).encode("ascii", "ignore")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.decode("ascii").lower()).strip("-")
    return slug[:SLUG_MAX].rstrip("-") or f"show-{_short_hash(name)}"


def show_slugs(shows: list[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Every show's slug, unique: on a collision the first name (sorted) keeps the slug and each other
    one gets the slug plus a hash of its name. Also (show, why) for every show that was renamed so."""
    slugs: dict[str, str] = {}
    owners: dict[str, str] = {}
    renamed: list[tuple[str, str]] = []
    for name in sorted(shows):
        slug = show_slug(name)
        if slug in owners:
            other = owners[slug]
            slug = f"{slug[: SLUG_MAX - 7].rstrip('-')}-{_short_hash(name)}"
            renamed.append(
                (
                    name,
                    f"shows {printable(other)!r} and {printable(name)!r} share the id prefix "
                    f"{slugs[other]!r}; new episodes of {printable(name)!r} use {slug!r} "
                    "(rename a folder to choose)",
                )
            )
        owners.setdefault(slug, name)
        slugs[name] = slug
    return slugs, renamed


def episode_number(file_name: str) -> int:
    """The episode number in a file name (see the module rules); 0 when there is none."""
    stem = Path(file_name).stem
    m = _EP_NUMBER.search(stem)
    if m:
        return int(m.group(1))
    numbers = [n for n in _DIGITS.findall(_DATES.sub(" ", stem)) if len(n) <= NUMBER_MAX_DIGITS]
    return int(numbers[-1]) if numbers else 0


def name_date(file_name: str) -> str | None:
    """The first real calendar date in a file name, as YYYY-MM-DD (AI-EWG names carry the air date)."""
    for m in _NAME_DATE.finditer(Path(file_name).stem):
        try:
            return date(int(m.group(1)), int(m.group(3)), int(m.group(4))).isoformat()
        except ValueError:
            continue  # 2008-13-45 is a number, not a date
    return None


def make_item_id(slug: str, number: int, mtime: float, file_name: str = "") -> str:
    """The AI-EWG id; the date is the one in the file name, else the mtime's day (UTC)."""
    day = name_date(file_name) or datetime.fromtimestamp(mtime, tz=UTC).strftime("%Y-%m-%d")
    return f"{slug}_ep{number:03d}_{day}"


def humanise_title(stem: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[_]+", " ", stem)).strip()


def content_fingerprint(path: Path, size: int) -> str:
    """SHA-256 of the size and the first, middle and last MiB: the same for a copy or a moved file,
    different when content changes; reads at most 3 MiB."""
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        for offset in sorted({0, max(0, size // 2 - SAMPLE // 2), max(0, size - SAMPLE)}):
            fh.seek(offset)
            h.update(fh.read(SAMPLE))
    return f"{size}:{h.hexdigest()}"


@dataclass
class ScanEntry:
    item_id: str
    source: Path
    show: str
    title: str
    fingerprint: str | None  # content fingerprint; None for an empty file (no content to name it)
    new: bool  # a new id was given to this file in this scan (False: known path, or known content)

    def as_tuple(self) -> tuple[str, str, str, str]:
        return (self.item_id, str(self.source), self.show, self.title)


@dataclass(frozen=True)
class Problem:
    """An entry the scan skipped (or a show it renamed), and why, in printable words."""

    path: Path
    why: str

    @property
    def shown(self) -> str:
        return printable(str(self.path))


@dataclass
class ScanResult:
    ready: list[ScanEntry] = field(default_factory=list)
    waiting: list[tuple[Path, str]] = field(default_factory=list)  # (file, why it is not taken yet)
    missing_folders: list[tuple[str, Path]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # every bad entry, on every scan
    new_problems: list[Problem] = field(default_factory=list)  # ... not reported by an earlier scan


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
    fsafe.make_dir(path.parent)
    fsafe.write_json(path, state, indent=1, sort_keys=True)  # owner-only, atomic, never through a link


def _source_files(folder: Path, problems: list[Problem]) -> list[Path]:
    """Every file name under a show folder, sorted; hidden folders and links to folders are not entered.
    A folder that cannot be listed (permissions, a path too long) is a problem, not the end of the scan."""

    def unlistable(exc: OSError) -> None:
        problems.append(
            Problem(
                Path(exc.filename or folder),
                f"cannot be listed ({exc.strerror}); the files in it are skipped",
            )
        )

    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=unlistable):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(dirpath, name) for name in filenames)
    return sorted(found)


def _free_id(base: str, taken: set[str], registry: Registry | None) -> str:
    item_id, n = base, 1
    while item_id in taken or (registry is not None and registry.id_in_use(item_id)):
        n += 1
        item_id = f"{base}-{n}"
    return item_id


def scan(
    ws_root: Path,
    folders_config: Mapping[str, Any] | SourceFolders,
    now: float,
    registry: Registry | None = None,
) -> ScanResult:
    """Everything `scan_sources` knows: files ready (with fingerprints), files waiting, entries skipped.

    `registry` (the database) names episodes by content and ids in use beyond what the state file
    remembers; without it the state file alone decides."""
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
    # (path, why) reported before; a damaged list only costs reporting them again.
    reported = {tuple(p) for p in state.get("reported") or [] if isinstance(p, list) and len(p) == 2}
    taken = set(ids.values())
    by_content: dict[str, str] = {}  # content fingerprint -> id, the first path's
    for k, f in sorted(files.items()):
        if f.get("content") and k in ids:
            by_content.setdefault(f["content"], ids[k])
    result = ScanResult()
    slugs, renamed = show_slugs(list(cfg.shows))
    result.problems.extend(Problem(cfg.shows[name], why) for name, why in renamed)
    seen: set[str] = set()
    # Ready files without an id yet: (key, show, file, mtime, content fingerprint or None).
    fresh: list[tuple[str, str, Path, float, str | None]] = []
    for show, folder in sorted(cfg.shows.items()):
        if not is_utf8(show):
            result.problems.append(Problem(folder, _NOT_UTF8_SHOW))
            continue
        if not folder.is_dir():
            result.missing_folders.append((show, folder))
            continue
        for path in _source_files(folder, result.problems):
            rel = path.relative_to(folder).as_posix()
            if not _matches(rel, path.name, cfg.include) or _matches(rel, path.name, cfg.exclude):
                continue
            key = str(path)
            if not is_utf8(key):
                result.problems.append(Problem(path, _NOT_UTF8_FILE))
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue  # vanished between listing and stat, or a dangling link
            except OSError as exc:
                result.problems.append(Problem(path, f"cannot be read ({exc.strerror}); skipped"))
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            seen.add(key)
            last = files.get(key)
            if last and last["size"] == st.st_size and last["mtime_ns"] == st.st_mtime_ns:
                since, content = last["since"], last.get("content")
            else:
                since = min(now, st.st_mtime) if last is None else now
                content = None
            age = now - since
            if content is None and age >= cfg.stable_seconds:
                try:
                    content = content_fingerprint(path, st.st_size)
                except OSError as exc:
                    result.waiting.append((path, f"cannot be read yet: {exc.strerror}"))
                    continue
            files[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "since": since, "content": content}
            if age < cfg.stable_seconds:
                result.waiting.append(
                    (
                        path,
                        f"size or mtime changed {age:.0f} s ago; waiting until they have been "
                        f"stable for {cfg.stable_seconds:.0f} s (still being copied?)",
                    )
                )
                continue
            identity = content if st.st_size else None  # every empty file looks alike: no identity
            title = humanise_title(path.stem)
            if key in ids:
                result.ready.append(ScanEntry(ids[key], path, show, title, identity, new=False))
            else:
                fresh.append((key, show, path, st.st_mtime, identity))
    for key, show, path, mtime, identity in sorted(fresh):
        item_id = by_content.get(identity) if identity else None
        if item_id is None and identity and registry is not None:
            item_id = registry.episode_for(identity)
        new = item_id is None
        if new:
            base = make_item_id(slugs[show], episode_number(path.name), mtime, file_name=path.name)
            item_id = _free_id(base, taken, registry)
        taken.add(item_id)
        ids[key] = item_id
        if identity:
            by_content.setdefault(identity, item_id)
        title = humanise_title(path.stem)
        result.ready.append(ScanEntry(item_id, path, show, title, identity, new=new))
    for key in list(files):
        if key not in seen:
            del files[key]  # ids stay: a file that comes back gets its old id
    result.new_problems = [p for p in result.problems if (str(p.path), p.why) not in reported]
    # Only what is wrong now: a problem that went away is reported again if it comes back.
    state["reported"] = sorted({(str(p.path), p.why) for p in result.problems})
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
