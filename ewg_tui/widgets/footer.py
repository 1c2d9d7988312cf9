"""Textual's footer, rebuilt only when the keys it shows change."""
from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer as TextualFooter


def shown_bindings(screen: Screen) -> tuple:
    """What the footer draws from the screen's bindings: key, label, state and tooltip of each shown one."""
    return tuple((binding.key, binding.action, binding.description, binding.group, enabled, tooltip)
                 for (_node, binding, enabled, tooltip) in screen.active_bindings.values()
                 if binding.show or binding.action.endswith("command_palette"))


class Footer(TextualFooter):
    """Textual recomposes its footer whenever a screen's bindings may have changed: every focus
    change and every refresh_bindings. Most of those show the same keys, and a rebuild (every key
    widget, then a layout pass) cost 20-60 ms of a key press with 100k episodes and a busy engine.
    """

    _shown: tuple | None = None

    def bindings_changed(self, screen: Screen) -> None:
        shown = shown_bindings(screen)
        if self._bindings_ready and shown == self._shown:
            return
        super().bindings_changed(screen)
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            self._shown = shown           # a rebuild was scheduled for exactly these keys
