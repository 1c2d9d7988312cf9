"""The command palette (`:` and ctrl+p): every verb and view action of the main screen, by name."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider


class ConsoleCommands(Provider):
    """Lists what the main screen can do right now; verbs that do not apply (or read-only mode) are left out."""

    def _commands(self) -> list[tuple[str, str, str]]:
        screen = self.screen
        commands = getattr(screen, "palette_commands", None)
        return commands() if commands else []

    async def discover(self) -> Hits:
        for title, help_text, action in self._commands():
            yield DiscoveryHit(title, partial(self.screen.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(
                    score, matcher.highlight(title), partial(self.screen.run_action, action), help=help_text
                )
