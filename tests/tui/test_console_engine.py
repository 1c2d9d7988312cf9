"""The console with an in-process engine: engine events reach the UI, quitting asks what to do with work."""

from __future__ import annotations

import re

from pilot_helpers import ready, wait_for

from engine.runtime import Engine, EngineEvent
from ewg_tui.app import EwgApp
from ewg_tui.screens.quit_dialog import QuitScreen


def engine_app(make_demo, count: int = 1, workers: int = 1, speed: float = 0.05):
    """A console with an in-process engine, not started yet (as run_console builds it)."""
    ws = make_demo(count=count, speed=speed)
    engine = Engine(ws, workers=workers)
    app = EwgApp(ws, engine=engine, poll_interval=0.2, actor="tester", cursor_blink=False)
    engine.on_event = app.engine_event
    return ws, engine, app


def busy_engine_app(make_demo):
    return engine_app(
        make_demo, count=3, workers=2, speed=40.0
    )  # stages take tens of seconds: work stays in flight


async def test_quit_while_busy_asks_and_stops_gracefully(make_demo):
    ws, engine, app = busy_engine_app(make_demo)
    engine.start()
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await ready(pilot)
            await wait_for(pilot, lambda: engine.busy() >= 1, timeout=20, what="work in flight")
            await wait_for(
                pilot,
                lambda: re.search(r"workers [12]/2", str(screen.query_one("#engine-header").render())),
                timeout=20,
                what="the header to count the busy workers",
            )
            await pilot.press("q")
            await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), what="the quit question")
            assert app.focused.id == "stop"
            await pilot.press("enter")
            await wait_for(pilot, lambda: engine.state == "stopped", timeout=30, what="a graceful stop")
        assert not app.leave_running
        running = ws.store.read_one("SELECT COUNT(*) FROM items WHERE status='running'")[0]
        assert running == 0  # released where they were, to resume next start
    finally:
        engine.stop(force=True)


async def test_quit_can_leave_work_to_a_headless_engine(make_demo):
    ws, engine, app = busy_engine_app(make_demo)
    engine.start()
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await wait_for(pilot, lambda: engine.busy() > 0, timeout=20, what="work in flight")
            await pilot.press("q")
            await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen), what="the quit question")
            await pilot.press("tab", "enter")  # "Leave running"
            await wait_for(pilot, lambda: app.leave_running, what="the leave choice")
        assert engine.state == "running"  # run_console skips the stop; the process just ends
    finally:
        engine.stop(force=True)


async def test_engine_state_events_reach_the_header(make_demo):
    ws, engine, app = busy_engine_app(make_demo)
    engine.start()
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await ready(pilot)
            header = screen.query_one("#engine-header")
            await wait_for(pilot, lambda: "running" in str(header.render()), what="running")
            app.run_worker(lambda: engine.stop(), thread=True)
            await wait_for(
                pilot,
                lambda: any(w in str(header.render()) for w in ("stopping", "stopped")),
                timeout=15,
                what="the stopping state",
            )
    finally:
        engine.stop(force=True)


async def test_an_engine_event_reaches_the_main_screen_once(make_demo, monkeypatch):
    """The app hands engine events to the main screen; nothing may hand them back (a busy loop)."""
    from ewg_tui.screens.main import MainScreen

    seen: list[EngineEvent] = []
    handler = MainScreen.on_engine_notice
    monkeypatch.setattr(
        MainScreen,
        "on_engine_notice",
        lambda screen, message: (seen.append(message.event), handler(screen, message)),
    )
    _ws, _engine, app = engine_app(make_demo)  # never started: the test sends the events itself
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        app.engine_event(EngineEvent("state", text="running"))
        await wait_for(pilot, lambda: seen, what="the event on the main screen")
        await pilot.pause(0.3)
        assert len(seen) == 1


async def test_engine_events_during_start_up_and_tear_down_do_not_crash_the_console(make_demo):
    """Events come from engine threads at any moment: before the main screen has its widgets (run_console
    starts the engine first) and while the app tears it down (a `stopped` after a second q)."""
    import threading

    _ws, _engine, app = engine_app(make_demo)  # never started: the test sends the events itself
    done = threading.Event()

    def chatter() -> None:
        while not done.is_set():
            app.engine_event(EngineEvent("state", text="running"))
            done.wait(0.0005)

    app.engine_event(EngineEvent("state", text="running"))  # as engine.start() does, before app.run()
    thread = threading.Thread(target=chatter, daemon=True)
    thread.start()
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await pilot.pause(0.3)
    finally:
        done.set()
        thread.join(5)
    assert app.return_code in (None, 0)


async def test_the_engine_starts_after_the_first_window_is_on_screen(make_demo):
    """run_console hands the engine's start to `after_first_view`: its start-up work (0.5 s at 100k
    episodes) comes after the first frame with episodes, not before it; it is called once."""
    ws, engine, app = engine_app(make_demo, count=2)
    calls: list[int] = []

    def start() -> None:
        calls.append(len(app.screen.episodes.order))  # rows already shown when it is called
        engine.start()

    app.after_first_view = start
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await wait_for(pilot, lambda: engine.state == "running", timeout=20, what="the engine started")
            for _ in range(3):
                app.screen.poll(True)
                await pilot.pause(0.1)
        assert calls == [2] and app.after_first_view is None
    finally:
        engine.stop(force=True)


def test_run_console_settles_the_heap_then_starts_the_engine_after_the_first_view(make_demo, monkeypatch):
    """After the first window: start-up's objects are frozen out of the collector's full passes
    (a 90 ms pause between a key and its frame, measured) and full passes wait for a pause in the
    typing (heap.py); then the engine starts. The collector is restored at the end."""
    import gc
    import time

    from ewg_tui import app as app_module

    ws = make_demo(count=1)
    order: list[str] = []
    monkeypatch.setattr(app_module.heap, "settle", lambda: order.append("settled"))
    real_start = Engine.start

    def start(self):
        order.append("engine started")
        real_start(self)
        order.append("engine running")
        return self

    monkeypatch.setattr(Engine, "start", start)

    def run(self, *a, **kw):  # the first window is drawn, then the operator quits
        order.append("first view")
        self.after_first_view()
        deadline = time.monotonic() + 20
        while order[-1] != "engine running" and time.monotonic() < deadline:
            time.sleep(0.02)
        order.append(f"idle collector {'on' if self.heap.enabled else 'off'}")
        return 0

    monkeypatch.setattr(EwgApp, "run", run)
    monkeypatch.setattr(app_module.TerminalWatch, "start", lambda self: None)
    monkeypatch.setattr(app_module.TerminalWatch, "stop", lambda self: None)
    assert app_module.run_console(ws.root, workers=1, attach=False, readonly=False, ws=ws) == 0
    assert order == ["first view", "settled", "engine started", "engine running", "idle collector on"]
    assert gc.get_threshold()[2] < 2**20  # the process's collector is as it was once the console ended
