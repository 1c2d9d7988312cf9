"""Error classes and the rule-based classifier (ARCHITECTURE.md contract 4).

A stage fails by raising. `classify()` turns the exception into one of the
error classes below and records *why* it chose it (the matching rule), so an
operator can see the reasoning and a site can override it per stage in
`[stages.KIND.NAME] error_rules`.
"""

from __future__ import annotations

import errno
import re
import subprocess
from dataclasses import dataclass

from .db import faults

TRANSIENT = "transient"
CACHE_RELATED = "cache_related"
RESOURCE = "resource"
PERSISTENT = "persistent"
CONFIG_ERROR = "config_error"
MISSING_DEPENDENCY = "missing_dependency"

ERROR_CLASSES = (TRANSIENT, CACHE_RELATED, RESOURCE, PERSISTENT, CONFIG_ERROR, MISSING_DEPENDENCY)
# Classes that go back into the queue on their own; the rest wait for an operator.
AUTO_RETRY_CLASSES = (TRANSIENT, CACHE_RELATED, RESOURCE)

SUGGESTIONS = {
    TRANSIENT: "Retried automatically with backoff; if it keeps failing check the service or network, then retry.",
    CACHE_RELATED: "The item's cache was cleared before the retry; if it fails again clear the cache and force reprocess.",
    RESOURCE: "Free disk space or memory; the engine resumes by itself when the resource is back.",
    PERSISTENT: "The input is bad: fix or replace the source file, then force reprocess, or skip the stage.",
    CONFIG_ERROR: "Fix the stage's settings in ewg.toml, restart the engine, then retry.",
    MISSING_DEPENDENCY: "Install or configure the missing tool named in the message, then retry.",
}

# The verbs a suggestion names. A suggestion says what to do in words ("then retry", "force reprocess",
# "skip the stage") and never names a key: keys are the operator's (`[console.keymap]`), so the console
# adds the active key after each verb it finds here (ewg_tui/keys.py), and the CLI shows the words alone.
SUGGESTED_VERBS = {  # the phrase, as written in a suggestion -> the verb (engine.verbs.Operator's name)
    "force reprocess": "reprocess",
    "clear the cache": "clear_cache",
    "skip the stage": "skip",
    "resume": "resume",
    "retry": "retry",
}
# A verb, not the noun: "then retry" and "retry this item", not "before the retry" or "a retry".
_VERB_MENTION = re.compile(
    r"(?<![Tt]he )(?<![Aa] )\b(" + "|".join(map(re.escape, SUGGESTED_VERBS)) + r")\b(?![-_])", re.IGNORECASE
)


def verb_mentions(text: str) -> list[tuple[int, str]]:
    """Where a suggestion names a verb: (the index just after the phrase, the verb), in order."""
    return [(m.end(), SUGGESTED_VERBS[m.group(1).lower()]) for m in _VERB_MENTION.finditer(text or "")]


class StageError(Exception):
    """Raised by a stage that knows what went wrong and which road it takes."""

    def __init__(self, error_class: str, message: str, detail: str = "", suggestion: str = "") -> None:
        if error_class not in ERROR_CLASSES:
            raise ValueError(f"unknown error class {error_class!r}")
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.detail = detail
        self.suggestion = suggestion

    def __reduce__(self):  # pickled whole (a worker subprocess reports it): class, detail and suggestion
        return (type(self), (self.error_class, self.message, self.detail, self.suggestion))


class Cancelled(Exception):
    """Raised inside a stage when its cancel token is set (stop, timeout, stall, shutdown)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LeaseLost(Exception):
    """A fenced write was refused: this worker no longer owns the item."""


@dataclass(frozen=True)
class Classification:
    error_class: str
    reason: str
    suggestion: str


@dataclass(frozen=True)
class ErrorRule:
    """`pattern` is searched in "ExceptionType: message"; first match wins."""

    pattern: str
    error_class: str

    def matches(self, text: str) -> bool:
        return re.search(self.pattern, text, re.IGNORECASE) is not None


_RESOURCE_ERRNOS = {errno.ENOSPC, errno.ENOMEM, errno.EDQUOT}
_TRANSIENT_ERRNOS = {
    errno.EIO,
    errno.EAGAIN,
    errno.EBUSY,
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
}

RESOURCE_TEXT = re.compile(r"no space left|disk (is )?full|out of memory|cannot allocate", re.IGNORECASE)

# Text rules used after the type-based ones; sites add their own per stage.
DEFAULT_RULES: tuple[ErrorRule, ...] = (
    ErrorRule(
        r"\b(429|5\d\d)\b.*(error|status|too many)|(error|status|too many).*\b(429|5\d\d)\b", TRANSIENT
    ),
    ErrorRule(
        r"timed? ?out|temporar|unavailable|connection (reset|refused|aborted)|database is (locked|busy)",
        TRANSIENT,
    ),
    ErrorRule(RESOURCE_TEXT.pattern, RESOURCE),
    ErrorRule(r"checksum mismatch|cache (corrupt|mismatch|stale)|corrupt(ed)? cache", CACHE_RELATED),
    ErrorRule(r"corrupt|truncated|invalid data|unsupported format|moov atom", PERSISTENT),
    ErrorRule(r"not installed|command not found|no module named", MISSING_DEPENDENCY),
)


def classify(exc: BaseException, rules: tuple[ErrorRule, ...] = ()) -> Classification:
    """Decide the error class of `exc`, stage rules first, then built-in knowledge."""
    text = f"{type(exc).__name__}: {exc}"
    for rule in rules:
        if rule.matches(text):
            return _result(rule.error_class, f"stage rule /{rule.pattern}/ matched")
    if isinstance(exc, StageError):
        return Classification(
            exc.error_class, "raised by the stage", exc.suggestion or SUGGESTIONS[exc.error_class]
        )
    if isinstance(exc, MemoryError):
        return _result(RESOURCE, "MemoryError")
    if isinstance(exc, (ModuleNotFoundError, ImportError)):
        return _result(MISSING_DEPENDENCY, type(exc).__name__)
    if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
        return _result(RESOURCE, f"errno {errno.errorcode.get(exc.errno, exc.errno)}")
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return _result(TRANSIENT, f"errno {errno.errorcode.get(exc.errno, exc.errno)}")
    if isinstance(exc, (TimeoutError, ConnectionError, subprocess.TimeoutExpired)):
        return _result(TRANSIENT, type(exc).__name__)
    db_fault = faults.fault(exc)
    if db_fault == faults.BUSY:
        return _result(TRANSIENT, "database busy")
    if db_fault == faults.FULL:
        return _result(RESOURCE, "database or disk is full")
    if db_fault == faults.LOST:
        return _result(TRANSIENT, "the database server could not be reached")
    for rule in DEFAULT_RULES:
        if rule.matches(text):
            return _result(rule.error_class, f"built-in rule /{rule.pattern}/ matched")
    if isinstance(exc, FileNotFoundError):
        return _result(PERSISTENT, "an input file is missing")
    if isinstance(exc, (ValueError, KeyError, TypeError)):
        return _result(PERSISTENT, f"{type(exc).__name__} in stage code or data")
    # Unknown failures are retried: a real pipeline's unknowns are mostly flaky.
    return _result(TRANSIENT, f"unrecognised {type(exc).__name__}, treated as transient")


def _result(error_class: str, reason: str) -> Classification:
    return Classification(error_class, reason, SUGGESTIONS[error_class])


def fingerprint(
    stage: str | None, error_class: str | None, message: str | None, *, item_id: str = "", source: str = ""
) -> str:
    """Failure-group key: stage + class + message with this item's names, paths, ids and numbers blurred,
    so the same failure on different episodes lands in one group."""
    text = message or ""
    if source:
        stem = source.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        for known in sorted({source, source.rsplit("/", 1)[-1], stem}, key=len, reverse=True):
            if len(known) > 2:
                text = text.replace(known, "<source>")
    if item_id:
        text = text.replace(item_id, "<item>")
    text = re.sub(r"[^\s'\"]*/[^\s'\"]*", "<path>", text)
    text = re.sub(r"\b[0-9a-f]{8,}\b", "<hex>", text)
    text = re.sub(r"\b\d+(\.\d+)?\b", "<n>", text)
    text = re.sub(r"\s+", " ", text).strip()[:160]
    return f"{stage or '-'}|{error_class or '-'}|{text}"
