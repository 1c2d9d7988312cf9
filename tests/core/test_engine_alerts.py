"""Alerts: delivered to a webhook and a command, deduplicated, rate-limited, retried, never blocking."""

from __future__ import annotations

import http.server
import json
import sys
import threading
import time

from engine.alerts import Alert, Alerter, AlertEvent, AlertPolicy, CommandSink, WebhookSink
from engine.clock import FakeClock


class Receiver:
    """A loopback webhook that records each JSON body; answers 503 for the first `fail_first` posts."""

    def __init__(self, fail_first: int = 0) -> None:
        receiver = self
        self.bodies: list[dict] = []
        self.posts = 0
        self.fail_first = fail_first

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts += 1
                if receiver.posts <= receiver.fail_first:
                    self.send_response(503)
                else:
                    receiver.bodies.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                """Quiet: no access log in the test output."""

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def alert(clock, event=AlertEvent.NEEDS_OPERATOR, items=("ep1",), cls="persistent"):
    return Alert(
        event=event, message="corrupt source", host="box1", at=clock.now(), items=items, error_class=cls
    )


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_webhook_gets_the_json_document():
    clock, hook = FakeClock(), Receiver()
    alerter = Alerter([WebhookSink(hook.url)], clock=clock).start()
    try:
        assert alerter.notify(alert(clock))
        wait_for(lambda: hook.bodies)
    finally:
        alerter.stop()
        hook.close()
    doc = hook.bodies[0]
    assert doc["event"] == "needs_operator" and doc["items"] == ["ep1"] and doc["host"] == "box1"
    assert doc["error_class"] == "persistent" and doc["at"].endswith("Z") and doc["schema"] == 1


def test_the_same_alert_within_the_window_is_sent_once():
    clock, hook = FakeClock(), Receiver()
    alerter = Alerter([WebhookSink(hook.url)], AlertPolicy(dedupe_window=60), clock=clock).start()
    try:
        assert alerter.notify(alert(clock))
        assert not alerter.notify(alert(clock))
        clock.advance(61)
        assert alerter.notify(alert(clock))  # outside the window: a reminder
        wait_for(lambda: len(hook.bodies) == 2)
    finally:
        alerter.stop()
        hook.close()
    assert alerter.counters.deduplicated == 1


def test_the_rate_limit_counts_what_it_suppresses_and_says_so():
    clock, hook = FakeClock(), Receiver()
    alerter = Alerter([WebhookSink(hook.url)], AlertPolicy(per_minute=2), clock=clock).start()
    try:
        sent = [alerter.notify(alert(clock, items=(f"ep{n}",))) for n in range(5)]
        assert sent == [True, True, False, False, False]
        wait_for(lambda: len(hook.bodies) == 2)
        clock.advance(60)
        assert alerter.notify(alert(clock, items=("ep9",)))
        wait_for(lambda: len(hook.bodies) == 3)
    finally:
        alerter.stop()
        hook.close()
    assert hook.bodies[2]["suppressed_before"] == 3 and alerter.counters.suppressed == 3


def test_a_failing_webhook_is_retried_with_backoff():
    clock, hook = FakeClock(), Receiver(fail_first=2)
    sleeps: list[float] = []
    alerter = Alerter(
        [WebhookSink(hook.url)], AlertPolicy(max_tries=4, base_delay=1), clock=clock, sleep=sleeps.append
    )
    try:
        [result] = alerter.send_now(alert(clock))
    finally:
        hook.close()
    assert result.ok and result.tries == 3 and len(hook.bodies) == 1
    assert sleeps == [1, 2]  # exponential


def test_an_unreachable_webhook_never_blocks_notify():
    clock = FakeClock()
    dead = Receiver()
    dead.close()  # connection refused from now on
    alerter = Alerter(
        [WebhookSink(dead.url, timeout=1)],
        AlertPolicy(max_tries=3),
        clock=clock,
        sleep=lambda s: time.sleep(0.5),
    ).start()
    try:
        started = time.monotonic()
        for n in range(20):
            alerter.notify(alert(clock, items=(f"ep{n}",)))
        assert time.monotonic() - started < 0.2  # enqueued, not delivered, on the caller's thread
        wait_for(lambda: alerter.counters.failed >= 1)
    finally:
        alerter.stop(timeout=0.1)


def test_a_command_gets_the_json_on_stdin(tmp_path):
    out = tmp_path / "got.json"
    script = f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())"
    clock = FakeClock()
    [result] = Alerter([CommandSink([sys.executable, "-c", script])], clock=clock).send_now(
        alert(clock, event=AlertEvent.RESOURCE_PAUSE, items=(), cls=None)
    )
    assert result.ok
    assert json.loads(out.read_text())["event"] == "resource_pause"


def test_a_failing_command_reports_its_exit_and_stderr():
    clock = FakeClock()
    argv = [sys.executable, "-c", "import sys; sys.stderr.write('no route'); sys.exit(3)"]
    [result] = Alerter(
        [CommandSink(argv)], AlertPolicy(max_tries=2), clock=clock, sleep=lambda s: None
    ).send_now(alert(clock))
    assert not result.ok and result.tries == 2
    assert "exited 3" in result.error and "no route" in result.error


def test_no_sinks_means_no_thread_and_nothing_queued():
    clock = FakeClock()
    alerter = Alerter([], clock=clock).start()
    assert not alerter.enabled and not alerter.notify(alert(clock))
    alerter.stop()


# -- from the engine's audit trail to a person ------------------------------------------------------
PERSISTENT_FIRST = '\n[[demo.faults]]\nitem = 1\nstage = "discovered"\nfault = "persistent"\n'


def test_an_engine_alerts_on_work_that_needs_an_operator_and_on_its_stop(make_demo):
    from engine.runtime import Engine

    hook = Receiver()
    try:
        ws = make_demo(count=2, extra=PERSISTENT_FIRST, webhook=f'"{hook.url}"')
        eng = Engine(ws, workers=2).start()
        try:
            assert eng.run_until_idle(timeout=60)
            wait_for(lambda: any(b["event"] == "needs_operator" for b in hook.bodies))
        finally:
            eng.stop()
        wait_for(lambda: any(b["event"] == "engine_stop" for b in hook.bodies))
    finally:
        hook.close()
    [failed] = [b for b in hook.bodies if b["event"] == "needs_operator"]
    assert len(failed["items"]) == 1
    assert failed["error_class"] == "persistent" and "discovered" in failed["message"]
    assert failed["suggestion"]


def test_engines_sharing_a_database_send_each_alert_once(make_demo):
    from engine.alert_watch import AlertWatch

    ws = make_demo(count=1)
    clock = FakeClock()
    got: list[list[Alert]] = [[], []]

    class Recorder:
        def __init__(self, box):
            self.box = box
            self.enabled = True

        def notify(self, alert):
            self.box.append(alert)
            return True

    watches = [
        AlertWatch(ws.store, Recorder(box), clock, host="h", owner=f"h:{n}:0") for n, box in enumerate(got)
    ]
    assert [w.tick() for w in watches] == [0, 0]  # first look: the cursor starts at now, not at history
    with ws.store.write() as unit:
        unit.record_event(clock.now(), "engine", "resource_pause", reason="disk below the floor")
    assert sorted(w.tick() for w in watches) == [0, 1]
    assert len(got[0]) + len(got[1]) == 1
    [alert] = got[0] + got[1]
    assert alert.event == AlertEvent.RESOURCE_PAUSE and "disk below the floor" in alert.message


def test_ewg_alerts_test_reports_each_sink(make_demo, tmp_path):
    import subprocess

    hook = Receiver()
    try:
        ws = make_demo(count=1, webhook=f'"{hook.url}"')
        root = ws.root
        ws.close()
        proc = subprocess.run(
            [sys.executable, "-m", "ewg_tui.cli", "--workspace", str(root), "alerts", "test"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        hook.close()
    assert proc.returncode == 0, proc.stderr
    assert "webhook: delivered" in proc.stdout
    assert hook.bodies[0]["event"] == "test"


def test_ewg_alerts_test_without_sinks_says_how_to_configure_them(make_demo):
    import subprocess

    ws = make_demo(count=1)
    root = ws.root
    ws.close()
    proc = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", "--workspace", str(root), "alerts", "test"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "[alerts]" in proc.stderr and "Traceback" not in proc.stderr
