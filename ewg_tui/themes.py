"""The console's theme: `--theme NAME`, `[console] theme` in ewg.toml, and the theme the operator last
picked in the console (Textual's theme picker in the command palette), remembered per user.

Which one wins: the flag; else the remembered pick, unless ewg.toml's theme changed since that pick
(the newer decision wins: editing the file after picking in the console takes effect); else ewg.toml's;
else textual-dark.

The pick is remembered in the workspace, in `.ewg-console/console-UID.json`, one file per user, made
owner-only through engine.fsafe (a 0700 folder, a 0600 file written atomically, never through a link).
A file that cannot be read or names a theme Textual no longer has is ignored; one that cannot be written
only means the pick is not remembered (the console says so once).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from textual.theme import BUILTIN_THEMES

from engine import fsafe
from engine.config import ConfigError

DEFAULT_THEME = "textual-dark"
STATE_DIR = ".ewg-console"


def theme_names() -> list[str]:
    return sorted(BUILTIN_THEMES)


def check_theme(name: str, where: str) -> str:
    """`name` if Textual has that theme; else a ConfigError naming the valid ones."""
    if name in BUILTIN_THEMES:
        return name
    raise ConfigError(
        f"{where}: {name!r} is not a theme of this console. The themes are: {', '.join(theme_names())}."
    )


def state_path(root: Path) -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(root) / STATE_DIR / f"console-{uid}.json"


@dataclass(frozen=True)
class ThemeChoice:
    theme: str
    source: str  # "flag", "picked", "ewg.toml" or "default"


def read_picked(root: Path) -> dict:
    try:
        data = json.loads(state_path(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def choose_theme(root: Path, configured: str, flag: str | None, config_path: Path) -> ThemeChoice:
    """The theme to start with (see the module docstring for the order). Raises ConfigError for an
    unknown theme in the flag or in ewg.toml."""
    if flag is not None:
        return ThemeChoice(check_theme(flag, "--theme"), "flag")
    if configured:
        check_theme(configured, f"{config_path}: [console] theme")
    picked = read_picked(root)
    theme = picked.get("theme")
    if isinstance(theme, str) and theme in BUILTIN_THEMES and picked.get("configured", "") == configured:
        return ThemeChoice(theme, "picked")
    if configured:
        return ThemeChoice(configured, "ewg.toml")
    return ThemeChoice(DEFAULT_THEME, "default")


def remember_picked(root: Path, theme: str, configured: str) -> None:
    """Write the pick owner-only (raises OSError or fsafe.UnsafePath when it cannot)."""
    path = state_path(root)
    fsafe.make_dir(path.parent)
    fsafe.write_json(path, {"theme": theme, "configured": configured}, indent=1)
