"""Health: CPU, memory and disk free with sparklines and threshold colours, time-to-full, services."""

from __future__ import annotations

from textual.content import Content

from engine.config import Health
from engine.db.queries import Overview
from engine.text import one_line

from . import formatting as fmt
from .content_panel import ContentPanel


class HealthPanel(ContentPanel):
    DEFAULT_CSS = """
    HealthPanel {
        height: auto;
        padding: 0 1;
    }
    """

    def __init__(self, thresholds: Health, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.thresholds = thresholds
        self.overview: Overview | None = None

    def show(self, overview: Overview) -> None:
        self.overview = overview
        self.redraw()

    def compose_content(self) -> Content:
        ov = self.overview
        if ov is None or not ov.health:
            return Content.assemble(
                ("health: no samples yet (the engine samples every few seconds)", "$foreground-muted")
            )
        t = self.thresholds
        samples = ov.health
        last = samples[-1]
        width = max(20, self.size.width)
        compact = self.size.height < 4
        cpu = [s["cpu_percent"] for s in samples]
        mem = [s["memory_percent"] for s in samples]
        # from zero: 0.4 GB used of 78 GB free is a flat line, not a cliff
        disk = [min(s["disk_free_mb"], s["db_disk_free_mb"]) for s in samples]

        def level(value: float, warn: float) -> str:
            return "$error" if value >= warn else "$success"

        low = min(last["disk_free_mb"], last["db_disk_free_mb"])
        disk_style = (
            "$error"
            if low < t.disk_critical_free_mb
            else "$warning"
            if low < t.disk_warn_free_mb
            else "$success"
        )
        ttf = last.get("time_to_full_s")
        filling = ttf is not None and ttf < 7 * 86400
        ttf_style = (
            "bold $error"
            if filling and ttf < 3600
            else "$warning"
            if filling and ttf < 86400
            else "$foreground-muted"
        )
        cpu_value = (f"{last['cpu_percent']:3.0f}%", level(last["cpu_percent"], t.cpu_warn_percent))
        mem_value = (f"{last['memory_percent']:3.0f}%", level(last["memory_percent"], t.memory_warn_percent))
        disk_value = (fmt.megabytes(low), disk_style)
        services = self._services()
        if compact:
            spark = max(3, (width - 20) // 2)
            line1 = Content.assemble(
                "cpu ",
                cpu_value,
                " ",
                (fmt.sparkline(cpu, spark, 0, 100), "$accent"),
                "  mem ",
                mem_value,
                " ",
                (fmt.sparkline(mem, spark, 0, 100), "$accent"),
            )
            ttf_text = f" full {fmt.duration(ttf)}" if filling else ""
            tail = Content.assemble((ttf_text, ttf_style), "  " if services.cell_length else "", services)
            room = width - 2 - len("disk ") - len(disk_value[0]) - tail.cell_length
            disk_spark = (" " + fmt.sparkline(disk, room - 1, 0, max(disk))) if room >= 4 else ""
            line2 = Content.assemble("disk ", disk_value, (disk_spark, "$accent"), tail)
            return Content("\n").join([line1, line2])
        spark = max(4, min(40, width - 15))
        lines = [
            Content.assemble("cpu  ", cpu_value, "  ", (fmt.sparkline(cpu, spark, 0, 100), "$accent")),
            Content.assemble("mem  ", mem_value, "  ", (fmt.sparkline(mem, spark, 0, 100), "$accent")),
            Content.assemble(
                "disk ",
                disk_value,
                " free  ",
                (fmt.sparkline(disk, max(4, spark - 8), 0, max(disk)), "$accent"),
            ),
        ]
        detail = f"full in {fmt.duration(ttf)}" if filling else "not filling"
        if abs(last["db_disk_free_mb"] - last["disk_free_mb"]) > 1:
            detail += f" · db volume {fmt.megabytes(last['db_disk_free_mb'])}"
        lines.append(Content.assemble("     ", (detail, ttf_style)))
        lines.append(
            Content.assemble(services)
            if services.cell_length
            else Content.assemble(("no external services configured", "$foreground-muted"))
        )
        return Content("\n").join(lines)

    def _services(self) -> Content:
        ov = self.overview
        if not ov or not ov.services:
            return Content("")
        parts: list = []
        for service in ov.services:
            parts.append((f"{one_line(service['name'])} ", ""))
            parts.append(
                ("up ", fmt.look(self.app, "done").markup)
                if service["ok"]
                else ("DOWN ", fmt.look(self.app, "failed").markup)
            )
        return Content.assemble(*parts)
