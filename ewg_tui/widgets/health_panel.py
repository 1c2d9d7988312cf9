"""Health: CPU, memory and disk free with sparklines and threshold colours, time-to-full, services."""
from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from engine.config import Health
from engine.queries import Overview

from . import formatting as fmt


class HealthPanel(Static):
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
        self.update(self.compose_content())

    def on_resize(self) -> None:
        if self.overview is not None:
            self.update(self.compose_content())

    def compose_content(self) -> Content:
        ov = self.overview
        if ov is None or not ov.health:
            return Content.assemble(("health: no samples yet (the engine samples every few seconds)", "$text-muted"))
        t = self.thresholds
        samples = ov.health
        last = samples[-1]
        width = max(8, self.size.width - 2)
        compact = self.size.height < 4 or width < 40
        spark = 8 if compact else max(8, min(30, width - 34))
        cpu = [s["cpu_percent"] for s in samples]
        mem = [s["memory_percent"] for s in samples]
        disk = [min(s["disk_free_mb"], s["db_disk_free_mb"]) for s in samples]

        def level(value: float, warn: float, higher_is_worse: bool = True, critical: float | None = None) -> str:
            if higher_is_worse:
                return "$error" if value >= warn else "$success"
            if critical is not None and value < critical:
                return "$error"
            return "$warning" if value < warn else "$success"

        low = min(last["disk_free_mb"], last["db_disk_free_mb"])
        disk_style = level(low, t.disk_warn_free_mb, False, t.disk_critical_free_mb)
        ttf = last.get("time_to_full_s")
        ttf_text = f"full in {fmt.duration(ttf)}" if ttf is not None and ttf < 7 * 86400 else "not filling"
        lines: list[Content] = []
        cpu_part = Content.assemble("cpu ", (f"{last['cpu_percent']:3.0f}%", level(last['cpu_percent'], t.cpu_warn_percent)),
                                    " ", (fmt.sparkline(cpu, spark, 0, 100), "$accent"))
        mem_part = Content.assemble("mem ", (f"{last['memory_percent']:3.0f}%",
                                             level(last['memory_percent'], t.memory_warn_percent)),
                                    " ", (fmt.sparkline(mem, spark, 0, 100), "$accent"))
        disk_text = fmt.megabytes(last["disk_free_mb"])
        if abs(last["db_disk_free_mb"] - last["disk_free_mb"]) > 1:
            disk_text += f" (db {fmt.megabytes(last['db_disk_free_mb'])})"
        disk_part = Content.assemble("disk ", (disk_text, disk_style), " free ", (fmt.sparkline(disk, spark), "$accent"),
                                     " ", (ttf_text, "$warning" if ttf is not None and ttf < 86400 else "$text-muted"))
        services = self._services()
        if compact:
            lines.append(Content.assemble(cpu_part, "  ", mem_part))
            lines.append(Content.assemble(disk_part))
            if services.cell_length:
                lines.append(services)
        else:
            lines += [cpu_part, mem_part, disk_part, services if services.cell_length else
                      Content.assemble(("services: none configured", "$text-muted"))]
        return Content("\n").join(lines)

    def _services(self) -> Content:
        ov = self.overview
        if not ov or not ov.services:
            return Content("")
        parts: list = ["services "]
        for service in ov.services:
            parts.append((f"{service['name']} ", ""))
            parts.append(("up  " if service["ok"] else "DOWN  ", "$success" if service["ok"] else "bold $error"))
        return Content.assemble(*parts)
