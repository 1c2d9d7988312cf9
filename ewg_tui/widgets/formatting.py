"""How the console writes numbers, times and states for people: short, fixed-width friendly."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.style import Style
from rich.text import Text
from textual.app import App
from textual.color import Color

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"

# The theme variable that colours each status; the theme decides the actual colour.
STATUS_VARIABLE = {
    "running": "accent",
    "retrying": "warning",
    "blocked": "warning",
    "failed": "error",
    "stopped": "primary",
    "done": "success",
    "queued": "foreground-muted",
}


def duration(seconds: float | None) -> str:
    """4s, 2m05s, 1h02m, 3d04h."""
    if seconds is None:
        return ""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def megabytes(mb: float | None) -> str:
    if mb is None:
        return "?"
    if mb >= 1024 * 1024:
        return f"{mb / 1024 / 1024:.1f} TB"
    if mb >= 1024:
        return f"{mb / 1024:.1f} GB"
    return f"{mb:.0f} MB"


def size(num_bytes: int | float) -> str:
    n = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def clock_time(ts: float | None) -> str:
    """HH:MM:SS UTC, the way the console shows when something happened."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%H:%M:%S")


def ago(ts: float | None, now: float) -> str:
    if ts is None:
        return ""
    return f"{duration(now - ts)} ago"


def middle_ellipsis(value: str, width: int, tail: int = 16) -> str:
    """Shorten an id keeping its distinctive end (episode number and date)."""
    if len(value) <= width:
        return value
    tail = max(1, min(tail, width - 4))
    return value[: width - tail - 1] + "…" + value[-tail:]


def sparkline(values: list[float], width: int, low: float | None = None, high: float | None = None) -> str:
    values = [v for v in values if v is not None][-width:]
    if not values:
        return ""
    lo = min(values) if low is None else low
    hi = max(values) if high is None else high
    span = hi - lo
    if span <= 0:
        return SPARK_BLOCKS[0] * len(values)
    top = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_BLOCKS[max(0, min(top, int((v - lo) / span * top + 0.5)))] for v in values)


def max_attempts(app: App) -> int:
    return app.ws.config.retry.max_attempts  # type: ignore[attr-defined]


def attempt_label(row: dict, limit: int) -> str:
    n = row.get("attempts") or 0
    if row["status"] == "running":
        n += 1  # the attempt in progress
    return f"{n}/{limit}" if n else ""


def status_label(row: dict, now: float, limit: int) -> str:
    """The status column: a waiting retry shows its countdown ("retry 2/3 in 14 s")."""
    status = row["status"]
    if status == "retrying":
        wait = (row.get("next_attempt_at") or now) - now
        number = f"retry {(row.get('attempts') or 0) + 1}/{limit}"
        return f"{number} in {wait:.0f} s" if wait >= 0.5 else f"{number} due"
    if status == "blocked":
        return "blocked"
    return status


def current_stage(row: dict) -> str:
    """The stage the item is at: the one running, waiting or failed; the last one when done."""
    if row.get("next_stage"):
        return row["next_stage"]
    return row.get("stage") or ""


def elapsed(row: dict, now: float) -> str:
    if row["status"] == "running" and row.get("started_at"):
        return duration(now - row["started_at"])
    return ""


def progress_label(row: dict) -> str:
    if row["status"] == "done":
        return "100%"
    if row["status"] in ("running", "retrying", "failed", "stopped") and row.get("progress"):
        return f"{row['progress'] * 100:.0f}%"
    return ""


def theme_style(app: App, variable: str, bold: bool = False) -> Style:
    """A Rich style coloured by a theme variable, for widgets (DataTable cells) that render with Rich."""
    value = app.theme_variables.get(variable)
    if not value:
        return Style(bold=bold)
    try:
        color = Color.parse(value)
    except Exception:
        return Style(bold=bold)
    background = Color.parse(app.theme_variables.get("background", "#000000"))
    return Style(
        color=background.blend(color, color.a).rich_color if color.a < 1 else color.rich_color, bold=bold
    )


def plain(value: object) -> Text:
    """A cell that is shown exactly as written (ids and titles may contain brackets)."""
    return Text("" if value is None else str(value), no_wrap=True, overflow="ellipsis", end="")
