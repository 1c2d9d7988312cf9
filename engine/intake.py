"""Intake: turn files in the source folders into episodes (`ewg scan`, and the engine on a schedule)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import transitions
from .config import ConfigError
from .workspace import Workspace, add_episode


@dataclass
class Intake:
    added: list[str] = field(default_factory=list)
    known: int = 0
    waiting: list[tuple[Path, str]] = field(default_factory=list)
    missing_folders: list[tuple[str, Path]] = field(default_factory=list)


def scan_once(ws: Workspace, actor: str = "engine") -> Intake:
    """One pass over `[sources]`: new, settled files become episodes; nothing is replaced or dropped."""
    sources = ws.config.sources
    if not sources.configured:
        raise ConfigError(
            "No source folders are configured: add a [sources] table to ewg.toml with "
            '`root = "FOLDER"` (one sub-folder per show) or `shows = { "Show" = "FOLDER" }`.'
        )
    from .media.discovery import ScanConfigError, scan

    now = ws.clock.now()
    try:
        result = scan(ws.root, sources.folders(), now)
    except ScanConfigError as exc:
        raise ConfigError(f"[sources] {exc}") from None
    intake = Intake(waiting=list(result.waiting), missing_folders=list(result.missing_folders))
    for entry in result.ready:
        if add_episode(ws, entry.item_id, str(entry.source), entry.show, entry.title):
            intake.added.append(entry.item_id)
        else:
            intake.known += 1
    if intake.added:
        with ws.store.write() as conn:
            transitions.record_event(
                conn,
                now,
                actor,
                "scan",
                affected=intake.added,
                result=f"{len(intake.added)} new episode(s), {len(intake.waiting)} waiting",
            )
    return intake
