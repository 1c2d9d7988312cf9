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

    _shown: tuple | None = None  # the keys shown now (or by the rebuild on its way)
    _built: tuple | None = None  # the keys the last rebuild made widgets for; some may be hidden now

    def compose(self) -> ComposeResult:
        if self._bindings_ready:
            self._shown = self._built = shown_bindings(self.screen)
        yield from super().compose()

    def bindings_changed(self, screen: Screen) -> None:
        if self._bindings_ready and screen is self.screen:
            shown = shown_bindings(screen)
            if shown == self._shown:
                return
            if self._built is not None and _in_order(_without_state(shown), _without_state(self._built)):
                self._set_states(shown)  # the same keys or fewer, some enabled or disabled: no rebuild
                return
            if screen.app.app_focus and self.is_attached:
                self._shown = shown  # a rebuild is on its way: the signals before it ask for no other
        super().bindings_changed(screen)

    def _set_states(self, shown: tuple) -> None:
        """Moving the cursor from a failed row to a done one enables and disables verbs, and focusing the
        filter bar takes the letter keys away (the bar types them); a rebuild for either cost 20-60 ms of
        the key press (three rebuilds for `/` and three for esc). Toggle the keys' state and hide the
        ones not shown where they are instead."""
        enabled = {(key, action): state for (key, action, _d, _g, state, _t) in shown}
        for widget in self.query(FooterKey):
            state = enabled.get((widget.key, widget.action))
            widget.display = state is not None
            if state is not None and widget._disabled == state:
                widget._disabled = not state
                widget.set_class(not state, "-disabled")
        self._shown = shown


def _in_order(shown: tuple, built: tuple) -> bool:
    """Whether `shown` is `built` with some keys left out, the rest in the same order."""
    rest = iter(built)
    return all(any(key == other for other in rest) for key in shown)


def _without_state(shown: tuple) -> tuple:
    return tuple(
        (key, action, description, group, tooltip) for (key, action, description, group, _e, tooltip) in shown
    )
