"""Helpers shared by the test suites: fast workspace configurations (engine intervals shrunk)."""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from engine.demo import demo_config, set_key

FAST = {
    "heartbeat_interval": "0.2",
    "dead_after": "1.5",
    "check_interval": "0.2",
    "poll_interval": "0.05",
    "stall_after": "2.0",  # above dead_after: engine.config refuses a stall threshold below it
    "base_delay": "0.1",
    "max_delay": "0.5",
    "stop_grace": "1.0",
    "force_grace": "0.5",
    "interval": "0.3",
    "backup_interval": "0",
}


def fast_config(text: str, **overrides: str) -> str:
    for key, value in {**FAST, **overrides}.items():
        text = set_key(text, key, value)
    return text


def fast_demo_text(faults: bool = True, speed: float = 0.05, extra: str = "", **overrides: str) -> str:
    """The demo configuration made fast; a [stages.K.S] table in `extra` replaces the demo's own."""
    text = fast_config(demo_config(faults=faults, speed=speed), **overrides)
    for header in re.findall(r"^\[stages\.\w+\.\w+\]$", extra, flags=re.M):
        text = re.sub(re.escape(header) + r"\nkind = \"demo\"\nduration = [^\n]*\n", "", text)
    return text + extra


class HealthService:
    """A service health endpoint on loopback whose answer the test switches: 200 while `up`, else 503."""

    def __init__(self, up: bool = True) -> None:
        import http.server
        import threading

        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200 if service.up else 503)
                self.end_headers()

            def log_message(self, *args):
                """Quiet: the test output is not the place for access logs."""

        self.up = up
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/health"

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A fresh, empty database on the server named by EWG_TEST_PG_URL (`.ci/run` starts one),
    dropped afterwards. Without a server the test skips, except in CI (EWG_REQUIRE_PG=1), where it
    fails: a broken server can never pass as a skip."""
    url = os.environ.get("EWG_TEST_PG_URL")
    if not url:
        if os.environ.get("EWG_REQUIRE_PG"):
            pytest.fail("EWG_REQUIRE_PG is set but EWG_TEST_PG_URL is not: the CI server did not start")
        pytest.skip("no PostgreSQL server: set EWG_TEST_PG_URL (bash .ci/run starts one)")
    import psycopg

    name = f"ewg_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
