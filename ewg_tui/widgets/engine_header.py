"""The top line: what the engine is doing, how busy it is, and which workspace this is."""

from __future__ import annotations

import time
from dataclasses import dataclass

from textual.content import Content
from textual.widgets import Static

from engine.db.queries import Overview
from engine.text import one_line

from ..keys import keys_of
from . import formatting as fmt

# The engine's state drawn with the status palette: (mark, palette key) by engine_summary's level.
ENGINE_LOOKS = {
    "success": ("●", "done"),
    "warning": (fmt.glyph("blocked"), "blocked"),
    "error": (fmt.glyph("failed"), "failed"),
}


@dataclass
class HeaderState:
    workspace: str
    overview: Overview | None = None
    local_state: str | None = None  # the in-process engine's state, None when attached
    local_workers: int = 0
    local_busy: int = 0
    attached: bool = False
    readonly: bool = False
    live: bool = True
    marked: int = 0
    db_lost_since: float | None = None  # the database server cannot be reached, since when


def engine_summary(state: HeaderState) -> tuple[str, str, int, int]:
    """(label, theme variable, busy, workers) for the engine(s) working on this workspace."""
    ov = state.overview
    engines = ov.engines if ov else []
    workers = sum(e["workers"] for e in engines)
    busy = sum(e["busy"] for e in engines)
    if state.local_state is not None:
        workers, busy = (
            max(workers, state.local_workers),
            max(busy, state.local_busy) if not engines else busy,
        )
    if state.db_lost_since is not None:
        since = time.strftime("%H:%M:%SZ", time.gmtime(state.db_lost_since))
        return (
            f"database unreachable since {since}: retrying; running stages go on, nothing new is claimed",
            "error",
            busy,
            workers,
        )
    if state.local_state == "stopping" or any(e["state"] == "stopping" for e in engines):
        return "stopping", "warning", busy, workers
    if ov and ov.paused:
        why = ov.paused.get("reason") or "by operator"
        who = ov.paused.get("actor") or ""
        return f"paused ({why}{', ' + who if who else ''})", "warning", busy, workers
    if ov and ov.resource_pause:
        return f"paused ({ov.resource_pause})", "error", busy, workers
    if state.local_state in ("stopped",) and not engines:
        return "stopped", "error", busy, workers
    if not engines and state.local_state is None:
        return "no engine running (start `ewg run --headless`)", "error", busy, workers
    return "running", "success", busy, workers


class EngineHeader(Static):
    DEFAULT_CSS = """
    EngineHeader {
        height: 1;
        background: $panel;
        color: $foreground;
        padding: 0 1;
    }
    """

    _shown: Content | None = None

    def show(self, state: HeaderState) -> None:
        label, variable, busy, workers = engine_summary(state)
        ov = state.overview
        mark, key = ENGINE_LOOKS[variable]
        if label == "stopping":
            mark = fmt.glyph("stopped")
        style = fmt.look(self.app, key).markup
        parts: list[tuple[str, str] | str] = [
            ("ewg ", "bold"),
            (f"{mark} ", style),
            (one_line(label), f"bold {style}"),
        ]
        parts.append(f"  workers {busy}/{workers}")
        if ov is not None:
            parts.append(f"  {ov.executions_per_minute}/min")
            if ov.stuck:
                parts.append(("  ", ""))
                parts.append(
                    (f"{fmt.glyph('STALLED')} {ov.stuck} stuck", fmt.look(self.app, "STALLED").markup)
                )
            if ov.warnings:
                first = one_line(ov.warnings[0]["kind"]).replace("_", " ")
                more = f" +{len(ov.warnings) - 1}" if len(ov.warnings) > 1 else ""
                parts.append((f"  ▲ early warning: {first}{more}", "bold $warning"))
        if state.attached:
            parts.append(("  attached", "$foreground-muted"))
        if state.readonly:
            parts.append(("  READ-ONLY", "bold $warning"))
        if not state.live:
            parts.append((f"  updates paused ({keys_of(self).label('main.live')})", "bold $warning"))
        if state.marked:
            parts.append((f"  {state.marked} marked", "bold $accent"))
        content = Content.assemble(*parts)
        room = self.size.width - content.cell_length - 2
        workspace = one_line(state.workspace)
        workspace = workspace if len(workspace) <= room else workspace.rsplit("/", 1)[-1]
        header = Content.assemble(content, ("  " + workspace, "$foreground-muted"))
        if header != self._shown:  # repaint only what changed
            self._shown = header
            self.update(header)
