"""Textual's footer, rebuilt only when the keys it shows change."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer as TextualFooter


def shown_bindings(screen: Screen) -> tuple:
    """What the footer draws from the screen's bindings: key, label, state and tooltip of each shown one."""
    return tuple(
        (binding.key, binding.action, binding.description, binding.group, enabled, tooltip)
        for (_node, binding, enabled, tooltip) in screen.active_bindings.values()
        if binding.show or binding.action.endswith("command_palette")
    )


class Footer(TextualFooter):
    """Textual recomposes its footer whenever a screen's bindings may have changed: every focus
    change and every refresh_bindings. Most of those show the same keys, and a rebuild (every key
    widget, then a layout pass) cost 20-60 ms of a key press with 100k episodes and a busy engine.
    """

    _shown: tuple | None = None  # the keys the last rebuild drew

    def compose(self) -> ComposeResult:
        if self._bindings_ready:
            self._shown = shown_bindings(self.screen)
        yield from super().compose()

    def bindings_changed(self, screen: Screen) -> None:
        if self._bindings_ready and screen is self.screen and shown_bindings(screen) == self._shown:
            return
        super().bindings_changed(screen)
