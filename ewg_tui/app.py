"""The operator console: a thin App that wires the workspace, the engine and the screens together."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from textual import events, work
from textual.app import App
from textual.binding import Binding
from textual.notifications import SeverityLevel

from engine.clock import Clock
from engine.config import command_warnings
from engine.fsafe import UnsafePath
from engine.runtime import Engine, EngineEvent
from engine.text import inert, one_line
from engine.verbs import Operator
from engine.workspace import CONFIG_NAME, Workspace, open_workspace

from . import heap
from .keys import ActiveKeys, check_keymap
from .messages import EngineNotice
from .screens.commands import ConsoleCommands
from .screens.main import MainScreen
from .screens.quit_dialog import LEAVE, STOP, QuitScreen
from .terminal import TerminalWatch, detach_dead
from .themes import choose_theme, remember_picked
from .widgets.first_run_hint import FirstRunHint, hint_seen, remember_hint_seen

POLL_INTERVAL = 0.25


class EwgApp(App[int]):
    """`EwgApp(ws, engine=None)` watches a workspace; with an engine it also runs the pipeline in-process.

    Tests inject a workspace with a FakeClock and no engine; `readonly` shows everything and runs no verb.
    `theme` is the --theme flag; `[console]` in ewg.toml gives the theme and the keymap (ConfigError for
    an unknown theme, binding id or key, or a key clash); `remember_theme` saves a theme picked in the
    console for the next start (ewg_tui/themes.py).
    """

    CSS_PATH = "app.tcss"
    TITLE = "ewg"
    COMMANDS = App.COMMANDS | {ConsoleCommands}
    BINDINGS = [
        Binding(
            "q", "quit_console", "Quit", id="app.quit", tooltip="Quit; asks what to do with work in flight"
        ),
    ]

    def __init__(
        self,
        ws: Workspace,
        *,
        engine: Engine | None = None,
        readonly: bool = False,
        clock: Clock | None = None,
        poll_interval: float = POLL_INTERVAL,
        actor: str | None = None,
        cursor_blink: bool = True,
        first_run_hint: bool | None = None,
        theme: str | None = None,
        remember_theme: bool = False,
    ) -> None:
        super().__init__()
        config_path = ws.root / CONFIG_NAME
        self.keys = ActiveKeys(check_keymap(ws.config.console.keymap, config_path))
        if self.keys.keymap:
            self.set_keymap(self.keys.keymap)
        self.theme_choice = choose_theme(ws.root, ws.config.console.theme, theme, config_path)
        self.theme = self.theme_choice.theme
        self.remember_theme = remember_theme
        self._remembered_theme = self.theme
        self.ws = ws
        self.engine = engine
        self.readonly = readonly
        self.clock = clock or ws.clock
        self.poll_interval = poll_interval
        # Rows a person marked are shown with what does not apply to them, not refused as a CLI call is.
        self.operator = Operator(ws, actor=actor, strict=False)
        self.leave_running = False
        self.cursor_blink = cursor_blink  # snapshot tests turn it off
        # None: shown until this person dismissed it once (widgets/first_run_hint.py); tests pass False
        self.first_run_hint = not hint_seen() if first_run_hint is None else first_run_hint
        # Called once, after the first window of episodes is on screen (run_console starts its engine
        # there: the screen comes first, the engine's start-up work after it).
        self.after_first_view: Callable[[], None] | None = None
        self.heap = heap.IdleCollector()  # enabled by run_console only: it changes the process's collector

    def on_mount(self) -> None:
        self.set_interval(heap.CHECK_EVERY, self.heap.collect_if_idle, name="idle-gc")
        self.push_screen(MainScreen())
        self.theme_changed_signal.subscribe(self, self._theme_picked)
        # No SIGHUP handler where the platform or thread cannot have one (Windows; tests off the main thread).
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._terminal_gone)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key):
            self.heap.key_pressed()
        if isinstance(event, events.Key) and self.first_run_hint:
            self.first_run_hint = False  # any key dismisses the hint, and still does what it does
            for screen in self.screen_stack:  # the app's own query does not reach into screens
                for hint in screen.query(FirstRunHint):
                    hint.remove()
            remember_hint_seen()
        await super().on_event(event)

    def _theme_picked(self, theme) -> None:
        """The operator picked a theme (the command palette's theme picker): remember it, off the loop."""
        if self.remember_theme and theme.name != self._remembered_theme:
            self._remembered_theme = theme.name
            self._remember_theme(theme.name)

    @work(thread=True, group="theme", exclusive=True, exit_on_error=False)
    def _remember_theme(self, name: str) -> None:
        try:
            remember_picked(self.ws.root, name, self.ws.config.console.theme)
        except (OSError, UnsafePath) as exc:
            self.call_from_thread(
                self.notify,
                f"The theme {name} is used now but could not be remembered for the next start: {exc}",
                title="Theme",
                severity="warning",
            )

    def _terminal_gone(self) -> None:
        """The SSH session dropped: stop the in-process engine gracefully (run_console does) and leave."""
        detach_dead()  # the screen's last writes go nowhere instead of failing on the dead terminal
        self.exit(return_code=129)

    def on_ready(self) -> None:
        for warning in command_warnings(self.ws.config):  # start-up warnings, e.g. a placeholder in sh -c
            self.notify(warning, title="ewg.toml", severity="warning", timeout=30, markup=False)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every toast of the console comes here (a screen's or widget's notify() calls the app's): the
        ids, reasons and error messages in it are made inert and never read as markup."""
        super().notify(
            inert(message), title=one_line(title), severity=severity, timeout=timeout, markup=False
        )

    def engine_event(self, event: EngineEvent) -> None:
        """Called on engine threads: hand the event to the event loop, touch nothing else."""
        self.post_message(EngineNotice(event))

    def on_engine_notice(self, message: EngineNotice) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, MainScreen):
                screen.post_message(EngineNotice(message.event))  # dropped if the screen is closing

    def action_quit_console(self) -> None:
        engine = self.engine
        if engine is None or engine.state != "running":
            self.exit()
            return
        busy = engine.busy()
        if not busy:
            self._stop_engine_then_exit()
            return

        def decided(choice: str | None) -> None:
            if choice == STOP:
                self.notify("Stopping: in-flight stages are released at a safe point…", markup=False)
                self._stop_engine_then_exit()
            elif choice == LEAVE:
                self.leave_running = True
                self.exit()

        self.push_screen(QuitScreen(busy), decided)

    @work(thread=True, group="shutdown", exit_on_error=False)
    def _stop_engine_then_exit(self) -> None:
        assert self.engine is not None
        self.engine.stop()
        self.call_from_thread(self.exit)


def _unblock_screen_writes(app: App, seconds: float = 3.0) -> None:
    """Textual's writer thread dies on its first EIO from a hung-up terminal, and the event loop then
    blocks on its full queue (30 writes): empty that queue so the app can run its exit."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        writer = getattr(getattr(app, "_driver", None), "_writer_thread", None)
        pending = getattr(writer, "_queue", None)
        if writer is not None and pending is not None and not writer.is_alive():
            while pending.get() is not None:  # the None is the driver's own stop request
                pass
            return
        time.sleep(0.05)


def run_console(
    root: Path,
    *,
    workers: int | None,
    attach: bool,
    readonly: bool,
    theme: str | None = None,
    ws: Workspace | None = None,
) -> int:
    """Open the console on the workspace at `root` (or on `ws`, opened there already, which it closes);
    run an in-process engine unless attached or read-only.
    A bad `[console]` setting or --theme raises ConfigError before the screen or the engine starts."""
    if ws is None:
        ws = open_workspace(root, readonly=readonly)
    try:
        # --readonly writes nothing in the workspace, not even the theme picked: --theme or ewg.toml then
        app = EwgApp(ws, readonly=readonly, theme=theme, remember_theme=not readonly)
    except BaseException:
        ws.close()
        raise
    engine = None
    if not attach and not readonly and workers != 0:
        engine = Engine(ws, workers=workers)
    app.engine = engine

    def wedged() -> None:  # the app did not end after its terminal went away: release the work, leave
        if engine is not None and engine.state in ("running", "stopping"):
            engine.stop()
        os._exit(129)

    def leave() -> None:  # on the watch's thread, once the terminal is gone and fds 0-2 point at /dev/null
        threading.Thread(target=_unblock_screen_writes, args=(app,), daemon=True).start()
        app.call_from_thread(lambda: app.exit(return_code=129))

    # The engine starts after the first frame with episodes, on a thread of its own: its start-up work
    # (recovery, the items folder sweep, health; 0.5 s at 100k episodes) no longer delays the screen.
    # The database's page check comes first on that thread: a damaged file ends the console, with the
    # same message the CLI gives, before any engine writes to it.
    start_failed: list[BaseException] = []

    def start_engine() -> None:
        try:
            ws.store.verify()  # the page check the CLI's open left for after the first frame
            if engine is not None:
                engine.start()
        except BaseException as exc:  # noqa: BLE001 - raised again after the app ends, as before
            start_failed.append(exc)
            with contextlib.suppress(RuntimeError):  # the app already ended
                app.call_from_thread(app.exit, 1)

    starter = threading.Thread(target=start_engine, name="ewg-engine-start", daemon=True)
    watch = TerminalWatch(leave, wedged)
    try:
        if engine is not None:
            engine.on_event = app.engine_event

        def first_view() -> None:
            heap.settle()
            app.heap.enable()  # full collections while no key comes (heap.py)
            starter.start()

        app.after_first_view = first_view
        watch.start()
        app.run()
    finally:
        app.heap.disable()
        watch.stop()
        if starter.is_alive():
            starter.join()  # quit while it was starting: let it finish, then stop it below
        if engine is not None and engine.state in ("running", "stopping") and not app.leave_running:
            engine.stop()
        ws.close()
    if start_failed:
        raise start_failed[0]
    if watch.gone.is_set():
        return 129
    return app.return_code or 0
