"""Enrichment through an Ollama-compatible service on loopback: answers, retries, and blocking while down."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from media_helpers import by_expectation, run_stage

from engine import errors
from engine.config import Config, Service
from engine.errors import StageError
from engine.media import llm


class FakeOllama:
    """A real HTTP server on 127.0.0.1 speaking the two Ollama endpoints the stage and health check use."""

    def __init__(self, port: int = 0, fail_first: int = 0) -> None:
        self.requests: list[dict] = []
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                return None  # keep the test output clean

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send(200, {"models": [{"name": "tiny-llm"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                if outer.fail_first > 0:
                    outer.fail_first -= 1
                    self._send(503, {"error": "loading model"})
                elif body.get("model") != "tiny-llm":
                    self._send(404, {"error": f"model {body.get('model')!r} not found"})
                else:
                    self._send(200, {"response": "  An episode about models and chips.  ", "done": True})

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/tags"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ollama():
    server = FakeOllama()
    yield server
    server.stop()


def _config(url: str) -> Config:
    return Config(services={"llm": Service(url=url, timeout=1.0)})


def _enrich(processed, tmp_path: Path, config: Config, **options):
    checkpoints = {s: processed["checkpoints"][s] for s in ("discovered", "transcribed")}
    opts = {
        "llm_service": "llm",
        "llm_model": "tiny-llm",
        "llm_timeout": 2.0,
        "llm_retry_wait": 0.01,
        **options,
    }
    return run_stage(
        processed["item"], "enriched", tmp_path, checkpoints, options=opts, config=config, services=["llm"]
    ), checkpoints


def test_llm_summary_is_added_to_the_enrichment(processed, tmp_path, ollama):
    _ctx, checkpoints = _enrich(processed, tmp_path, _config(ollama.url))
    enrichment = json.loads((checkpoints["enriched"] / "enrichment.json").read_text())
    assert enrichment["llm"] == {
        "service": "llm",
        "model": "tiny-llm",
        "summary": "An episode about models and chips.",
    }
    assert enrichment["keywords"], "the extractive results stay"
    request = ollama.requests[0]
    assert request["stream"] is False and request["options"]["temperature"] == 0
    transcript = (processed["checkpoints"]["transcribed"] / "transcript.txt").read_text()
    assert transcript.splitlines()[0] in request["prompt"]


def test_busy_service_is_retried_in_process(processed, tmp_path):
    server = FakeOllama(fail_first=2)
    try:
        _ctx, checkpoints = _enrich(processed, tmp_path, _config(server.url), llm_attempts=3)
    finally:
        server.stop()
    assert len(server.requests) == 3
    assert json.loads((checkpoints["enriched"] / "enrichment.json").read_text())["llm"]["summary"]


def test_service_down_is_transient_and_names_the_service(processed, tmp_path):
    server = FakeOllama()
    url = server.url
    server.stop()  # the port is now closed: connection refused
    started = time.monotonic()
    with pytest.raises(StageError) as info:
        _enrich(processed, tmp_path, _config(url), llm_attempts=2)
    assert time.monotonic() - started < 5
    exc = info.value
    assert exc.error_class == errors.TRANSIENT
    assert (
        "LLM service llm" in exc.message and "unavailable" in exc.message and "after 2 tries" in exc.message
    )
    assert "[services.llm]" in exc.suggestion
    assert errors.classify(exc).error_class == errors.TRANSIENT


def test_unknown_model_is_a_config_error(processed, tmp_path, ollama):
    with pytest.raises(StageError) as info:
        _enrich(processed, tmp_path, _config(ollama.url), llm_model="missing-model")
    assert info.value.error_class == errors.CONFIG_ERROR and "HTTP 404" in info.value.message
    assert len(ollama.requests) == 1, "a refusal is not retried"


def test_undeclared_service_is_a_config_error(processed, tmp_path):
    with pytest.raises(StageError, match=r"no \[services.llm\]") as info:
        _enrich(processed, tmp_path, Config())
    assert info.value.error_class == errors.CONFIG_ERROR


def test_base_url_drops_the_health_check_path():
    assert llm.base_url("http://127.0.0.1:11434/api/tags") == "http://127.0.0.1:11434"


def test_engine_blocks_enrichment_while_the_service_is_down_and_resumes_when_it_is_back(demo_media, tmp_path):
    """The whole road: a real engine, real stages, a real server on loopback that goes away and comes back."""
    from engine.runtime import Engine
    from engine.workspace import add_episode, init_workspace

    server = FakeOllama()
    port = server.port
    server.stop()  # down from the start
    toml = f"""
[engine]
workers = 1
poll_interval = 0.05
heartbeat_interval = 0.2
dead_after = 5.0
[retry]
base_delay = 0.0
max_delay = 0.0
[services.llm]
url = "http://127.0.0.1:{port}/api/tags"
timeout = 1.0
interval = 0.2
[stages.episode.discovered]
kind = "builtin"
[stages.episode.transcribed]
kind = "builtin"
[stages.episode.enriched]
kind = "builtin"
services = ["llm"]
options = {{ llm_service = "llm", llm_model = "tiny-llm", llm_timeout = 2.0, llm_attempts = 1 }}
[stages.episode.editorial]
kind = "builtin"
options = {{ min_clip_seconds = 1.0, max_clip_seconds = 2.5, max_clips = 1 }}
[stages.episode.rendered]
kind = "builtin"
[stages.clip.generated]
kind = "builtin"
[stages.clip.rendered]
kind = "builtin"
"""
    ws = init_workspace(tmp_path / "ws", toml)
    entry = by_expectation(demo_media, "ok")
    add_episode(ws, entry["id"], entry["source"], entry["show"], entry["title"])
    engine = Engine(ws).start()
    try:
        deadline = time.monotonic() + 20
        row = None
        while time.monotonic() < deadline:
            row = ws.store.read_one(
                "SELECT status, stage, blocked_reason, attempts FROM items WHERE id=?", (entry["id"],)
            )
            if row["status"] == "blocked":
                break
            time.sleep(0.05)
        assert row["status"] == "blocked", dict(row)
        assert row["stage"] == "transcribed"
        assert row["blocked_reason"].startswith("service llm is down")
        assert row["attempts"] == 0, "waiting for a service spends no attempts"
        revived = FakeOllama(port=port)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                statuses = {r["id"]: r["status"] for r in ws.store.read("SELECT id, status FROM items")}
                if len(statuses) > 1 and set(statuses.values()) == {"done"}:
                    break
                time.sleep(0.1)
            assert set(statuses.values()) == {"done"} and len(statuses) == 2, statuses
            assert revived.requests, "enrichment used the service once it was back"
        finally:
            revived.stop()
    finally:
        engine.stop(grace=5)
        ws.close()
    page = ws.item_dir(entry["id"]) / "rendered" / "index.html"
    assert "An episode about models and chips." in page.read_text()
