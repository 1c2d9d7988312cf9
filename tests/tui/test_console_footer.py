"""The footer is rebuilt when the keys it shows change, and only then."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets._footer import FooterKey

from ewg_tui.widgets.footer import Footer


class CountingFooter(Footer):
    builds = 0

    def compose(self) -> ComposeResult:
        CountingFooter.builds += 1
        yield from super().compose()


class Keys(App[None]):
    BINDINGS = [Binding("r", "retry", "Retry"), Binding("s", "skip", "Skip")]
    retry_allowed = True

    def compose(self) -> ComposeResult:
        yield CountingFooter()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return None if action == "retry" and not self.retry_allowed else True

    def action_retry(self) -> None:
        """Nothing: the test only looks at the footer."""

    def action_skip(self) -> None:
        """Nothing: the test only looks at the footer."""

    def action_extra(self) -> None:
        """Nothing: the test only looks at the footer."""


async def test_the_footer_is_rebuilt_only_when_its_keys_change():
    app = Keys()
    async with app.run_test(size=(80, 10)) as pilot:
        await pilot.pause(0.1)
        built = CountingFooter.builds
        assert built >= 1
        for _ in range(3):  # nothing it shows changed
            app.screen.refresh_bindings()
            await pilot.pause(0.05)
        assert CountingFooter.builds == built
        app.retry_allowed = False  # Retry is greyed out now: toggled in place, no rebuild
        app.screen.refresh_bindings()
        await pilot.pause(0.1)
        assert CountingFooter.builds == built
        retry = [k for k in app.query(FooterKey) if k.action == "retry"]
        assert retry and retry[0].has_class("-disabled") and retry[0]._disabled
        app.retry_allowed = True
        app.screen.refresh_bindings()
        await pilot.pause(0.1)
        assert CountingFooter.builds == built and not retry[0].has_class("-disabled")
        app.bind("x", "extra", description="Extra")  # a new key shown: rebuild
        app.screen.refresh_bindings()
        await pilot.pause(0.3)
        assert CountingFooter.builds == built + 1
        assert "x" in {k.key for k in app.query(FooterKey)}


async def test_keys_taken_away_and_given_back_are_hidden_and_shown_without_a_rebuild():
    """Focusing the filter bar takes the letter keys away (the bar types them) and esc gives them back:
    three rebuilds each way before (20-60 ms each); now the keys are hidden where they are."""
    app = Keys()
    async with app.run_test(size=(80, 10)) as pilot:
        await pilot.pause(0.1)
        built = CountingFooter.builds
        keys = {k.action: k for k in app.query(FooterKey)}
        assert {"retry", "skip"} <= set(keys)
        bindings = app._bindings.key_to_bindings
        before = dict(bindings)
        del bindings["s"]  # as a focused Input takes a letter key away
        for _ in range(3):
            app.screen.refresh_bindings()
            await pilot.pause(0.05)
        assert CountingFooter.builds == built
        assert not keys["skip"].display and keys["retry"].display
        bindings.clear()
        bindings.update(before)  # given back, in the same order
        app.screen.refresh_bindings()
        await pilot.pause(0.1)
        assert CountingFooter.builds == built and keys["skip"].display
        app.bind("x", "extra", description="Extra")  # a key the widgets were not built for: one rebuild
        for _ in range(3):
            app.screen.refresh_bindings()
        await pilot.pause(0.3)
        assert CountingFooter.builds == built + 1
        assert "x" in {k.key for k in app.query(FooterKey)}
