"""Intake: turn files in the source folders into episodes (`ewg scan`, and the engine on a schedule).

A bad entry (a name that is not UTF-8, a folder that cannot be listed) is skipped and reported; every
other file is still taken. A file whose content is already an episode (a copy, a move, a copied
workspace, a lost scan-state file) is that episode, never a second one; when the episode's recorded
source is gone or lies outside the source folders, it is re-pointed at the file found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import pipeline, transitions
from .config import ConfigError
from .media.discovery import Problem, ScanConfigError, ScanEntry, SourceFolders, scan
from .workspace import Workspace, add_episode


@dataclass
class Intake:
    added: list[str] = field(default_factory=list)
    known: int = 0
    moved: list[str] = field(default_factory=list)  # episodes re-pointed at their source's new path
    waiting: list[tuple[Path, str]] = field(default_factory=list)
    missing_folders: list[tuple[str, Path]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # every bad entry, on every scan
    new_problems: list[Problem] = field(default_factory=list)  # ... first reported by this scan


class EpisodeRegistry:
    """The database as the scanner's `Registry`: which episode has this content, which ids are in use."""

    def __init__(self, ws: Workspace) -> None:
        self.store = ws.store

    def episode_for(self, content: str) -> str | None:
        row = self.store.read_one(
            "SELECT id FROM items WHERE fingerprint=? AND kind=? ORDER BY created_at, id LIMIT 1",
            (content, pipeline.EPISODE),
        )
        return None if row is None else str(row[0])

    def id_in_use(self, item_id: str) -> bool:
        return self.store.read_one("SELECT 1 FROM items WHERE id=?", (item_id,)) is not None


def _repoint(ws: Workspace, entry: ScanEntry, folders: SourceFolders, now: float) -> str | None:
    """Give a matched episode the file just found when its recorded source is gone or is not in the
    source folders (a moved file, a copied workspace). One transaction; the old source, or None when
    nothing changed."""
    with ws.store.write() as conn:
        row = conn.execute(
            "SELECT source FROM items WHERE id=? AND kind=?", (entry.item_id, pipeline.EPISODE)
        ).fetchone()
        if row is None or row[0] == str(entry.source):
            return None
        old = Path(row[0])
        inside = any(old.is_relative_to(folder) for folder in folders.shows.values())
        if inside and old.exists():
            return None  # a second copy of a source that is still in place: the episode keeps its own
        conn.execute(
            "UPDATE items SET source=?, updated_at=? WHERE id=? AND kind=?",
            (str(entry.source), now, entry.item_id, pipeline.EPISODE),
        )
        return str(old)


def scan_once(ws: Workspace, actor: str = "engine") -> Intake:
    """One pass over `[sources]`: new, settled files become episodes; nothing is replaced or dropped."""
    sources = ws.config.sources
    if not sources.configured:
        raise ConfigError(
            "No source folders are configured: add a [sources] table to ewg.toml with "
            '`root = "FOLDER"` (one sub-folder per show) or `shows = { "Show" = "FOLDER" }`.'
        )
    now = ws.clock.now()
    try:
        folders = SourceFolders.from_mapping(ws.root, sources.folders())
        result = scan(ws.root, folders, now, registry=EpisodeRegistry(ws))
    except ScanConfigError as exc:
        raise ConfigError(f"[sources] {exc}") from None
    intake = Intake(
        waiting=list(result.waiting),
        missing_folders=list(result.missing_folders),
        problems=list(result.problems),
        new_problems=list(result.new_problems),
    )
    before: dict[str, dict] = {}
    after: dict[str, dict] = {}
    for entry in result.ready:
        old = _repoint(ws, entry, folders, now) if entry.matched else None
        if old is not None:
            intake.moved.append(entry.item_id)
            before[entry.item_id] = {"source": old}
            after[entry.item_id] = {"source": str(entry.source)}
        if add_episode(
            ws, entry.item_id, str(entry.source), entry.show, entry.title, fingerprint=entry.fingerprint
        ):
            intake.added.append(entry.item_id)
        else:
            intake.known += 1
    if intake.added or intake.moved:
        with ws.store.write() as conn:
            transitions.record_event(
                conn,
                now,
                actor,
                "scan",
                affected=intake.added + intake.moved,
                before=before,
                after=after,
                result=f"{len(intake.added)} new episode(s), {len(intake.moved)} source(s) moved, "
                f"{len(intake.waiting)} waiting, {len(intake.problems)} problem(s)",
            )
    return intake
