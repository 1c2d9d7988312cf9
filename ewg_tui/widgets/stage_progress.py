"""Per-stage progress: one bar per stage with done / in flight / failed counts."""

from __future__ import annotations

from textual.content import Content

from engine import pipeline

from .content_panel import ContentPanel


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
                    (f"{stage:<{name_width - 1}} ", ""),
                    *self._bar(c, total, bar_width),
                    " ",
                    *self._numbers(c, digits),
                )
            )
        return Content("\n").join(lines)

    @staticmethod
    def _bar(c: dict, total: int, width: int) -> list[tuple[str, str]]:
        if total <= 0:
            return [("·" * width, "$foreground-muted")]
        cells = []
        remaining = width
        for key, glyph, style in (
            ("done", "█", "$success"),
            ("in_flight", "▓", "$accent"),
            ("failed", "█", "$error"),
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
    def _numbers(c: dict, digits: int) -> list[tuple[str, str]]:
        return [
            (f"{c['done']:>{digits + 1}}✓", "$success" if c["done"] else "$foreground-muted"),
            (f"{c['in_flight']:>{digits + 1}}▶", "$accent" if c["in_flight"] else "$foreground-muted"),
            (f"{c['failed']:>{digits + 1}}✗", "bold $error" if c["failed"] else "$foreground-muted"),
        ]
