"""Error classification and the retry road: pure functions, deterministic."""

from __future__ import annotations

import errno
import random
import subprocess

from engine import errors, policy
from engine.config import Config
from engine.errors import StageError, classify


def test_classification_by_type_and_text():
    assert classify(TimeoutError("x")).error_class == errors.TRANSIENT
    assert classify(ConnectionRefusedError()).error_class == errors.TRANSIENT
    assert classify(OSError(errno.ENOSPC, "No space left on device")).error_class == errors.RESOURCE
    assert classify(OSError(errno.EIO, "I/O error")).error_class == errors.TRANSIENT
    assert classify(MemoryError()).error_class == errors.RESOURCE
    assert classify(ModuleNotFoundError("No module named 'whisper'")).error_class == errors.MISSING_DEPENDENCY
    assert classify(RuntimeError("server said HTTP 503 error")).error_class == errors.TRANSIENT
    assert classify(RuntimeError("file is truncated")).error_class == errors.PERSISTENT
    assert classify(RuntimeError("cache checksum mismatch")).error_class == errors.CACHE_RELATED
    assert classify(subprocess.TimeoutExpired("x", 1)).error_class == errors.TRANSIENT
    assert classify(StageError(errors.CONFIG_ERROR, "bad")).error_class == errors.CONFIG_ERROR


def test_stage_rules_win_and_the_reason_is_recorded():
    rule = errors.ErrorRule("CUDA out of memory", errors.RESOURCE)
    c = classify(RuntimeError("CUDA out of memory, tried 2 GiB"), (rule,))
    assert c.error_class == errors.RESOURCE and "CUDA out of memory" in c.reason
    assert classify(RuntimeError("something odd")).reason.startswith("unrecognised")


def test_backoff_is_exponential_capped_and_jittered_deterministically():
    cfg = Config()
    waits = [policy.backoff(cfg, n, random.Random(3)) for n in range(1, 7)]
    assert waits == [policy.backoff(cfg, n, random.Random(3)) for n in range(1, 7)]
    for n, w in enumerate(waits, start=1):
        base = min(cfg.retry.max_delay, cfg.retry.base_delay * cfg.retry.exponential_base ** (n - 1))
        assert abs(w - base) <= base * cfg.retry.jitter + 1e-9
        assert w <= cfg.retry.max_delay


def test_roads():
    cfg, rng = Config(), random.Random(0)
    d = policy.after_failure(cfg, errors.TRANSIENT, 0, 100.0, rng)
    assert d.status == "retrying" and d.attempts == 1 and d.next_attempt_at > 100.0
    assert policy.after_failure(cfg, errors.TRANSIENT, 2, 100.0, rng).status == "failed"  # 3rd of 3
    assert policy.after_failure(cfg, errors.PERSISTENT, 0, 100.0, rng).status == "failed"
    assert policy.after_failure(cfg, errors.MISSING_DEPENDENCY, 0, 100.0, rng).status == "failed"
    r = policy.after_failure(cfg, errors.RESOURCE, 1, 100.0, rng)
    assert r.status == "blocked" and not r.spent and r.attempts == 1
    s = policy.after_failure(cfg, errors.TRANSIENT, 1, 100.0, rng, service_down="llm")
    assert s.status == "blocked" and not s.spent
    cfg.recovery.auto_retry_transient = False
    assert policy.after_failure(cfg, errors.TRANSIENT, 0, 100.0, rng).status == "failed"


def test_fingerprint_blurs_numbers_and_paths():
    a = errors.fingerprint("transcribed", "transient", "timeout after 31 s on /data/ep1.mp4")
    b = errors.fingerprint("transcribed", "transient", "timeout after 7 s on /data/ep2.mp4")
    assert a == b
