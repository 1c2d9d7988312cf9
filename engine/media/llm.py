"""A small client for an Ollama-compatible HTTP service (POST /api/generate).

Connection failures are retried in-process with tenacity (a few quick tries);
when they persist the stage raises a transient StageError naming the service,
and the engine's health monitor, which probes the same service, marks the
stage blocked without spending attempts until the service is back.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from .. import errors
from ..errors import StageError


class ServiceUnreachable(Exception):
    """The service did not answer (refused, reset, timed out, 5xx or 429): worth retrying."""


def base_url(url: str) -> str:
    """scheme://host:port of a service URL (the declared URL is usually its health check, e.g. /api/tags)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def _post(url: str, payload: dict, timeout: float) -> dict:
    body = json.dumps(payload).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - configured http(s) URL
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 429 or exc.code >= 500:
            raise ServiceUnreachable(f"HTTP {exc.code} {exc.reason}") from None
        detail = exc.read()[:300].decode(errors="replace")
        raise StageError(
            errors.CONFIG_ERROR,
            f"the LLM service refused the request at {url}: HTTP {exc.code} {detail}",
            suggestion="Check options.llm_model (is the model pulled on the server?) and the service URL, "
            "then retry.",
        ) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise ServiceUnreachable(str(getattr(exc, "reason", exc))) from None
    try:
        return json.loads(raw)
    except ValueError:
        raise ServiceUnreachable(f"answer is not JSON: {raw[:80]!r}") from None


def generate(
    service: str, url: str, model: str, prompt: str, timeout: float, attempts: int = 3, wait_base: float = 0.5
) -> str:
    """The model's answer to `prompt`, deterministic settings (temperature 0, fixed seed) for idempotency."""
    endpoint = base_url(url) + "/api/generate"
    payload = {"model": model, "prompt": prompt, "stream": False, "options": {"temperature": 0, "seed": 0}}
    retrying = Retrying(
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait_exponential(multiplier=wait_base, max=10 * max(wait_base, 0.01)),
        retry=retry_if_exception_type(ServiceUnreachable),
        reraise=True,
    )
    try:
        answer = retrying(_post, endpoint, payload, timeout)
    except ServiceUnreachable as exc:
        raise StageError(
            errors.TRANSIENT,
            f"LLM service {service} at {endpoint} is unavailable: {exc} (after {max(1, attempts)} tries)",
            suggestion=f"Start the service behind [services.{service}] (e.g. `ollama serve`); "
            "the stage waits as blocked and resumes by itself when it answers.",
        ) from None
    text = answer.get("response") if isinstance(answer, dict) else None
    if not isinstance(text, str):
        raise StageError(
            errors.TRANSIENT,
            f"LLM service {service} answered without a 'response' text: {json.dumps(answer)[:200]}",
        )
    return text.strip()
