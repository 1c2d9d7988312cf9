"""Textual's footer, rebuilt only when the keys it shows change."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer as TextualFooter
from textual.widgets._footer import FooterKey


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
        if self._bindings_ready and screen is self.screen:
            shown = shown_bindings(screen)
            if shown == self._shown:
                return
            if self._shown is not None and _without_state(shown) == _without_state(self._shown):
                self._set_states(shown)  # same keys, some enabled or disabled: no rebuild
                return
        super().bindings_changed(screen)

    def _set_states(self, shown: tuple) -> None:
        """Moving the cursor from a failed row to a done one enables and disables verbs; a rebuild for
        that took 20-60 ms a key press. Toggle the keys' state where they are instead."""
        enabled = {(key, action): state for (key, action, _d, _g, state, _t) in shown}
        for widget in self.query(FooterKey):
            state = enabled.get((widget.key, widget.action))
            if state is not None and widget._disabled == state:
                widget._disabled = not state
                widget.set_class(not state, "-disabled")
        self._shown = shown


def _without_state(shown: tuple) -> tuple:
    return tuple(
        (key, action, description, group, tooltip) for (key, action, description, group, _e, tooltip) in shown
    )
