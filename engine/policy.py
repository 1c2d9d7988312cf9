"""What happens after an attempt ends: the retry road (ARCHITECTURE.md contracts 3 and 4).

A pure function of the configuration, the error class and the attempt count,
so the worker, the watchdog and the tests all decide the same way. Backoff is
tenacity's exponential wait plus jitter from the engine's injected random
source (tenacity's own jitter uses the global `random`, which tests cannot seed).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from types import SimpleNamespace

from tenacity import wait_exponential

from . import errors
from .config import Config


@dataclass(frozen=True)
class Decision:
    status: str  # retrying | failed | blocked | queued | stopped
    attempts: int  # attempts spent on the stage after this one
    spent: bool  # did this attempt count against max_attempts
    next_attempt_at: float
    text: str  # the decision, as recorded on the attempt and shown to operators


def backoff(config: Config, attempt_number: int, rng: random.Random) -> float:
    """Seconds to wait before attempt `attempt_number + 1`."""
    r = config.retry
    wait = wait_exponential(
        multiplier=r.base_delay, exp_base=r.exponential_base, min=r.base_delay, max=r.max_delay
    )
    base = wait(SimpleNamespace(attempt_number=attempt_number))
    jitter = base * r.jitter * (2 * rng.random() - 1)
    return max(0.0, min(r.max_delay, base + jitter))


def after_failure(
    config: Config,
    error_class: str,
    attempts_before: int,
    now: float,
    rng: random.Random,
    service_down: str | None = None,
) -> Decision:
    """The road for a failed attempt of class `error_class` after `attempts_before` spent attempts."""
    max_attempts = config.retry.max_attempts
    if service_down:
        return Decision(
            "blocked",
            attempts_before,
            False,
            now + config.health.interval,
            f"service {service_down} is down: waiting as blocked, no attempt spent",
        )
    if error_class == errors.RESOURCE:
        return Decision(
            "blocked",
            attempts_before,
            False,
            now + config.health.interval,
            "resource exhausted: claiming paused until it returns, no attempt spent",
        )
    spent = attempts_before + 1
    if (
        error_class in config.recovery.manual_intervention_required
        or error_class not in errors.AUTO_RETRY_CLASSES
    ):
        return Decision("failed", spent, True, now, f"{error_class}: needs an operator")
    if error_class == errors.TRANSIENT and not config.recovery.auto_retry_transient:
        return Decision(
            "failed", spent, True, now, "transient, but auto_retry_transient is off: needs an operator"
        )
    if spent >= max_attempts:
        return Decision(
            "failed", spent, True, now, f"{error_class}: gave up after {spent}/{max_attempts} attempts"
        )
    delay = backoff(config, spent, rng)
    extra = ", cache cleared" if error_class == errors.CACHE_RELATED else ""
    return Decision(
        "retrying",
        spent,
        True,
        now + delay,
        f"{error_class}: retry {spent + 1}/{max_attempts} in {delay:.1f} s{extra}",
    )
