"""How the console writes numbers, times and states for people: short, fixed-width friendly."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

from rich.style import Style
from rich.text import Text
from textual.app import App
from textual.color import Color
from textual.widgets import Input

from engine.clock import iso
from engine.text import one_line

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"

# -- status palette ------------------------------------------------------------------------------
# Every status and verdict has its own glyph and, per colour mode, its own look. One table, used by the
# table cells, the header, the stage bars and the detail pane, so a state reads the same everywhere.
# Colour modes: "dark"/"light" (truecolor or 256 colours, picked by the theme's background), "ansi"
# (an ansi-* theme: the terminal's own palette), "16" (TERM=linux and other 16-colour terminals:
# the exact RGB of the 16 standard colours, so Rich's downgrade lands on the intended slot instead of
# the nearest one - orange accent and red error both became bright red), "mono" (NO_COLOR: no colour,
# so failed and stuck are bold and reversed: more prominent than healthy rows, not a darker grey).

GLYPHS = {
    "done": "✓",
    "running": "▶",
    "retrying": "↻",
    "blocked": "‖",  # not ⏸ or ⏱: DejaVu Sans Mono (most Linux terminals) has neither
    "stopped": "■",
    "failed": "✗",
    "queued": "·",
    "STALLED": "⚠",
    "TIMED OUT": "⊘",
    "SLOW": "◔",
    "DEAD": "☠",
}
VERDICTS = ("STALLED", "TIMED OUT", "SLOW", "DEAD")
# What the legend (`?`) says about each mark; `{key:ID}` is the binding's active key (ewg_tui/keys.py).
MEANING = {
    "done": "done: every stage finished",
    "running": "running: a worker has it now",
    "retrying": "retry: failed, the engine tries again after the countdown",
    "blocked": "blocked: waits for a service or disk space; no attempt spent",
    "stopped": "stopped: an operator stopped it; {key:verb.resume} resumes",
    "failed": "failed: the engine will not retry it (needs operator); {key:verb.retry} / {key:verb.reprocess} act",
    "queued": "queued: waiting for a worker",
    "STALLED": "STALLED: running, but no progress for a while",
    "TIMED OUT": "TIMED OUT: running past its stage timeout",
    "SLOW": "SLOW: much slower than this stage's recent runs",
    "DEAD": "DEAD: its engine stopped answering; it is rescued",
}

# The 16 standard colours as Rich matches them (rich._palettes.STANDARD_PALETTE).
_STANDARD = {
    "red": "#aa0000",
    "green": "#00aa00",
    "yellow": "#aa5500",
    "blue": "#0000aa",
    "magenta": "#aa00aa",
    "cyan": "#00aaaa",
    "bright_red": "#ff5555",
    "bright_green": "#55ff55",
    "bright_yellow": "#ffff55",
    "bright_blue": "#5555ff",
    "bright_magenta": "#ff55ff",
    "bright_cyan": "#55ffff",
}


@dataclass(frozen=True)
class Look:
    """How one status or verdict is drawn in one colour mode."""

    color: str | None = None  # "#rrggbb", "ansi_NAME", or None for the default foreground
    bold: bool = False
    reverse: bool = False
    dim: bool = False

    @cached_property  # looks are few and shared: each builds its styles once, not once per cell
    def markup(self) -> str:
        """A Textual style string, for Content (header, bars, detail pane)."""
        parts = [n for n, on in (("bold", self.bold), ("reverse", self.reverse), ("dim", self.dim)) if on]
        return " ".join(parts + ([self.color] if self.color else []))

    @cached_property
    def rich(self) -> Style:
        """A Rich style, for DataTable cells."""
        color = Color.parse(self.color).rich_color if self.color else None
        return Style(color=color, bold=self.bold, reverse=self.reverse, dim=self.dim)


# The basic colour each state takes in the ansi and 16-colour modes: seven different hues, so even
# an 8-colour terminal (bright drawn as bold) tells them apart.
_SLOTS = {
    "done": ("green", False),
    "running": ("bright_cyan", True),
    "retrying": ("yellow", True),
    "blocked": ("magenta", True),
    "stopped": ("bright_blue", False),
    "failed": ("bright_red", True),
    "STALLED": ("bright_red", True),
    "TIMED OUT": ("bright_red", True),
    "DEAD": ("bright_magenta", True),
    "SLOW": ("yellow", False),
}
_REVERSED = {"STALLED", "TIMED OUT", "DEAD"}  # stuck running work stands out in every mode

PALETTE: dict[str, dict[str, Look]] = {
    "dark": {
        "done": Look("#4ebf71"),
        "running": Look("#4fc1e9", bold=True),
        "retrying": Look("#e5c07b", bold=True),
        "blocked": Look("#c678dd", bold=True),
        "stopped": Look("#7f9cf5"),
        "failed": Look("#ff5c6c", bold=True),
        "queued": Look("#8a9099"),
        "STALLED": Look("#ff5c6c", bold=True, reverse=True),
        "TIMED OUT": Look("#ff5c6c", bold=True, reverse=True),
        "DEAD": Look("#ff79c6", bold=True, reverse=True),
        "SLOW": Look("#e5c07b"),
    },
    "light": {
        "done": Look("#1e7b34"),
        "running": Look("#0369a1", bold=True),
        "retrying": Look("#8a5a00", bold=True),
        "blocked": Look("#8e24aa", bold=True),
        "stopped": Look("#3949ab"),
        "failed": Look("#c62828", bold=True),
        "queued": Look("#6e7781"),
        "STALLED": Look("#c62828", bold=True, reverse=True),
        "TIMED OUT": Look("#c62828", bold=True, reverse=True),
        "DEAD": Look("#ad1457", bold=True, reverse=True),
        "SLOW": Look("#8a5a00"),
    },
    "ansi": {
        **{k: Look(f"ansi_{c}", bold=b, reverse=k in _REVERSED) for k, (c, b) in _SLOTS.items()},
        "queued": Look(dim=True),
    },
    "16": {
        **{k: Look(_STANDARD[c], bold=b, reverse=k in _REVERSED) for k, (c, b) in _SLOTS.items()},
        "queued": Look(dim=True),
    },
    "mono": {
        "done": Look(),
        "running": Look(bold=True),
        "retrying": Look(bold=True),
        "blocked": Look(bold=True),
        "stopped": Look(),
        "failed": Look(bold=True, reverse=True),
        "queued": Look(dim=True),
        "STALLED": Look(bold=True, reverse=True),
        "TIMED OUT": Look(bold=True, reverse=True),
        "DEAD": Look(bold=True, reverse=True),
        "SLOW": Look(bold=True),
    },
}


def color_mode(app: App) -> str:
    """Which PALETTE column this terminal and theme get (see the table's comment)."""
    if getattr(app, "no_color", False):
        return "mono"
    if app.native_ansi_color:
        return "ansi"
    if app.console.color_system in ("standard", "windows"):
        return "16"
    return "dark" if app.current_theme.dark else "light"


def look(app: App, key: str) -> Look:
    """The look of a status or verdict ("failed", "STALLED") for this app's colour mode."""
    return PALETTE[color_mode(app)].get(key, Look())


def glyph(key: str) -> str:
    return GLYPHS.get(key, " ")


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


def timestamp(ts: float | None) -> str:
    """When something happened: ISO 8601 UTC with Z, as `ewg run`, `ewg log` and `ewg status` write it."""
    return iso(ts)


def clock_time(ts: float | None) -> str:
    """HH:MM:SS (UTC): a time axis's labels, where the day is already said."""
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


_EPISODE_NUMBER = re.compile(r"(?i)(ep|e|episode)[-_ ]?\d+|\d+")


def short_id(value: str, width: int) -> str:
    """Shorten an id in the middle, keeping what tells episodes apart: the start of the show's slug and
    the episode number ("tech_talk_week…ep001"); the date after it goes first. Without a number, the
    id keeps its start and its end."""
    if len(value) <= width:
        return value
    numbers = list(_EPISODE_NUMBER.finditer(value))
    match = next((m for m in reversed(numbers) if m.group(1)), None) or (numbers[0] if numbers else None)
    if match is None or match.start() == 0 or width < 8:
        return middle_ellipsis(value, width)
    prefix, number, suffix = value[: match.start()], match.group(0), value[match.end() :]
    if len(prefix) + len(number) < width:  # the show and number fit: cut the date's end
        return value[: width - 1] + "…"
    room = width - 1 - len(number)
    if room < 3:
        return middle_ellipsis(value, width)
    if len(suffix) <= room - 8:  # room for the date too, and still 8 characters of the show
        return prefix[: room - len(suffix)] + "…" + number + suffix
    return prefix[:room] + "…" + number


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
    """The try column: the attempt in progress or spent. Empty for a failed item: "1/3" would read as
    two tries left, and the engine will not try again (its status says so)."""
    n = row.get("attempts") or 0
    if row["status"] == "failed":
        return ""
    if row["status"] == "running":
        n += 1  # the attempt in progress
    return f"{n}/{limit}" if n else ""


def needs_operator(row: dict, limit: int) -> bool:
    """A failed item that still had tries left: its class sends it to a person (policy.after_failure)."""
    return row["status"] == "failed" and (row.get("attempts") or 0) < limit


def status_label(row: dict, now: float, limit: int) -> str:
    """The status words: a waiting retry shows its countdown ("retry 2/3 in 14s"), a failed item its road
    ("needs operator", or "failed 3/3" when it used every try)."""
    status = row["status"]
    if status == "retrying":
        wait = (row.get("next_attempt_at") or now) - now
        number = f"retry {(row.get('attempts') or 0) + 1}/{limit}"
        return f"{number} in {wait:.0f}s" if wait >= 0.5 else f"{number} due"
    if status == "failed":
        return (
            "needs operator" if needs_operator(row, limit) else f"failed {row.get('attempts') or 0}/{limit}"
        )
    return status


def status_text(row: dict, now: float, limit: int) -> str:
    """Glyph and words: "✗ needs operator", "▶ running", "· queued"."""
    return f"{glyph(row['status'])} {status_label(row, now, limit)}"


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
    if row["status"] == "running" and row.get("progress"):  # a failed attempt's 93% means nothing now
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


def keep_inert(field: Input, value: str) -> bool:
    """Text pasted into an input (from a terminal, a log, a web page) is kept and shown inert: an escape
    sequence in it would otherwise be echoed raw to the terminal. True when the value was changed."""
    safe = one_line(value)
    if safe == value:
        return False
    field.value = safe
    return True


def plain(value: object) -> Text:
    """A cell shown as written, never as markup (ids and titles may contain brackets), on one line and
    inert (a title may hold escape sequences): engine/text.py."""
    return Text(one_line(value), no_wrap=True, overflow="ellipsis", end="")
