"""Intake: turn files in the source folders into episodes (`ewg scan`, and the engine on a schedule).

A bad entry (a name that is not UTF-8, a folder that cannot be listed) is skipped and reported; every
other file is still taken. A file whose content is already an episode (a copy, a move, a copied
workspace, a lost scan-state file) is that episode, never a second one; when the episode's recorded
source is gone or lies outside the source folders, it is re-pointed at the file found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError
from .db import upkeep
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
        return upkeep.episode_with_content(self.store, content)

    def id_in_use(self, item_id: str) -> bool:
        return upkeep.item_exists(self.store, item_id)


def _lost_sources(
    ws: Workspace, ready: list[ScanEntry], folders: SourceFolders
) -> dict[str, tuple[str, str]]:
    """Episodes found in the sources at a path other than their recorded source, when that source is
    gone or lies outside the source folders (a moved file, a copied workspace, a deleted original):
    id -> (recorded source, the path to read from now, the first found)."""
    found: dict[str, set[str]] = {}
    for entry in ready:
        found.setdefault(entry.item_id, set()).add(str(entry.source))
    recorded = upkeep.episode_sources(ws.store, found)
    lost: dict[str, tuple[str, str]] = {}
    for item_id, old in recorded.items():
        if old in found[item_id]:
            continue
        old_path = Path(old)
        inside = any(old_path.is_relative_to(folder) for folder in folders.shows.values())
        if not inside or not old_path.exists():
            lost[item_id] = (old, min(found[item_id]))
    return lost


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
    for entry in result.ready:
        if add_episode(
            ws, entry.item_id, str(entry.source), entry.show, entry.title, fingerprint=entry.fingerprint
        ):
            intake.added.append(entry.item_id)
        else:
            intake.known += 1
    lost = _lost_sources(ws, result.ready, folders)
    if not intake.added and not lost:
        return intake
    with ws.store.write() as unit:  # the re-points and their audit event: one transaction
        for item_id, (old, new) in sorted(lost.items()):
            # only from the source read above: a concurrent change is not undone
            if unit.repoint_source(item_id, old=old, new=new, now=now):
                intake.moved.append(item_id)
        unit.record_event(
            now,
            actor,
            "scan",
            affected=intake.added + intake.moved,
            before={i: {"source": lost[i][0]} for i in intake.moved},
            after={i: {"source": lost[i][1]} for i in intake.moved},
            result=f"{len(intake.added)} new episode(s), {len(intake.moved)} source(s) moved, "
            f"{len(intake.waiting)} waiting, {len(intake.problems)} problem(s)",
        )
    return intake
