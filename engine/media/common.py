"""Small helpers the media stages share: reading checkpoints, writing outputs, options."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import errors
from ..errors import StageError
from ..stages import StageContext

_DATE_IN_ID = re.compile(r"_(\d{4}-\d{2}-\d{2})(?:-\d+)?$")


def write_json(path: Path, data: Any) -> None:
    """Sorted keys and a trailing newline, so reruns on the same input give identical bytes."""
    path.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def read_input(ctx: StageContext, stage: str, name: str, parent: bool = False) -> Any:
    """A JSON file from a completed stage's checkpoint; a missing one is an operator problem, not a retry."""
    inputs = ctx.parent_inputs if parent else ctx.inputs
    whose = "the episode's" if parent else "this item's"
    folder = inputs.get(stage)
    if folder is None:
        raise StageError(
            errors.PERSISTENT,
            f"{whose} {stage} checkpoint is missing, so {ctx.stage} has no input",
            suggestion=f"Force reprocess the episode from {stage}, then retry this item.",
        )
    path = Path(folder) / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(
            errors.CACHE_RELATED,
            f"checkpoint file {path} is missing; the {stage} checkpoint is damaged",
            suggestion=f"Force reprocess from {stage}.",
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StageError(
            errors.CACHE_RELATED,
            f"checkpoint file {path} is corrupt: {exc}",
            suggestion=f"Force reprocess from {stage}.",
        ) from None


def option(ctx: StageContext, key: str, default: Any, kind: type) -> Any:
    """An option of this stage, type-checked so a typo in ewg.toml fails with the key's name."""
    value = ctx.options.get(key, default)
    if value is None:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    raise StageError(
        errors.CONFIG_ERROR,
        f"[stages.{ctx.item.kind}.{ctx.stage}] options.{key} must be {kind.__name__}, got {value!r}",
        suggestion=f"Fix options.{key} in ewg.toml, then retry.",
    )


def episode_date(item_id: str, fallback_ts: float | None) -> str:
    """The YYYY-MM-DD of an AI-EWG id, else the source's mtime (UTC)."""
    m = _DATE_IN_ID.search(item_id)
    if m:
        return m.group(1)
    if fallback_ts is None:
        return ""
    return datetime.fromtimestamp(fallback_ts, tz=UTC).strftime("%Y-%m-%d")


def timestamp(seconds: float) -> str:
    """H:MM:SS for people (the page's transcript)."""
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
