"""A panel drawn from data: it repaints only when its content changed, and redraws on resize."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static


class ContentPanel(Static):
    """Subclasses keep their data on the instance and build `compose_content()` from it."""

    _shown: Content | None = None

    def compose_content(self) -> Content:
        raise TypeError(f"{type(self).__name__} must define compose_content()")

    def redraw(self) -> None:
        content = self.compose_content()
        if content != self._shown:  # unchanged panels are not repainted (quiet over SSH)
            self._shown = content
            self.update(content)

    def on_resize(self) -> None:
        self._shown = None  # the layout depends on the width
        self.redraw()
