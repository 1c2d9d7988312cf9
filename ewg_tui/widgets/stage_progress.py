"""Per-stage progress: one bar per stage with done / in flight / failed counts."""

from __future__ import annotations

from textual.content import Content

from engine import pipeline
from engine.text import one_line

from . import formatting as fmt
from .content_panel import ContentPanel

BAR_GLYPHS = {"done": "█", "in_flight": "▓", "failed": "×", "waiting": "·"}  # × is in every font


class StageProgress(ContentPanel):
    DEFAULT_CSS = """
    StageProgress {
        height: auto;
        padding: 0 1;
    }
    """

    def __init__(self, kind: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.kind = kind
        self.counts: dict | None = None

    def show(self, counts: dict) -> None:
        self.counts = counts.get(self.kind)
        self.redraw()

    def compose_content(self) -> Content:
        entry = self.counts or {
            "total": 0,
            "by_stage": {
                s: {"done": 0, "in_flight": 0, "failed": 0, "waiting": 0}
                for s in pipeline.stages_of(self.kind)
            },
        }
        total = entry["total"]
        label = "Episodes" if self.kind == pipeline.EPISODE else "Clips"
        width = max(20, self.size.width)
        framed = self.styles.border_top[0] not in ("", "none", "hidden")
        lines = [] if framed else [Content.assemble((f"{label} {total}", "bold"))]
        name_width = 12
        digits = len(str(max(total, 9)))
        counts_width = 3 * (digits + 2)
        bar_width = max(3, width - name_width - counts_width - 1)
        for stage, c in entry["by_stage"].items():
            lines.append(
                Content.assemble(
                    (f"{one_line(stage):<{name_width - 1}} ", ""),
                    *self._bar(c, total, bar_width, self._looks()),
                    " ",
                    *self._numbers(c, digits, self._looks()),
                )
            )
        return Content("\n").join(lines)

    def _looks(self) -> dict[str, str]:
        """Segment styles from the status palette: done like done, in flight like running, failed like
        failed, so the bars read like the table in every colour mode."""
        return {key: fmt.look(self.app, key).markup for key in ("done", "running", "failed")}

    @staticmethod
    def _bar(c: dict, total: int, width: int, looks: dict[str, str]) -> list[tuple[str, str]]:
        if total <= 0:
            return [("·" * width, "$foreground-muted")]
        cells = []
        remaining = width
        for key, glyph, style in (  # three different glyphs: told apart without colour too
            ("done", BAR_GLYPHS["done"], looks["done"]),
            ("in_flight", BAR_GLYPHS["in_flight"], looks["running"]),
            ("failed", BAR_GLYPHS["failed"], looks["failed"]),
        ):
            n = c[key]
            size = round(n / total * width)
            if n and size == 0:
                size = 1
            size = min(size, remaining)
            remaining -= size
            if size:
                cells.append((glyph * size, style))
        cells.append(("·" * remaining, "$foreground-muted"))
        return cells

    @staticmethod
    def _numbers(c: dict, digits: int, looks: dict[str, str]) -> list[tuple[str, str]]:
        muted = "$foreground-muted"
        return [
            (f"{c['done']:>{digits + 1}}{fmt.glyph('done')}", looks["done"] if c["done"] else muted),
            (
                f"{c['in_flight']:>{digits + 1}}{fmt.glyph('running')}",
                looks["running"] if c["in_flight"] else muted,
            ),
            (f"{c['failed']:>{digits + 1}}{fmt.glyph('failed')}", looks["failed"] if c["failed"] else muted),
        ]
