"""Getting an error out of the console: the text copied to the clipboard (OSC 52) and the text handed to
`$PAGER`, and how the pager is found.

Both texts are inert (engine/text.py): a stage's output may hold escape sequences, and the pager writes
what it gets to the terminal; the clipboard's OSC 52 payload is base64 and cannot act on the terminal,
but the text is pasted into terminals and tickets later, so it is made inert too. Neither names a key:
it is read outside the console (the suggestion's verbs stay words).
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass

from engine.clock import iso
from engine.text import inert, one_line

from .keys import without_keys

COPY_LOG_LINES = 40
FALLBACK_PAGERS = (["less"], ["more"])


def _suggestion(item: dict) -> str:
    return without_keys(item.get("error_suggestion") or "")  # a key letter is no use outside the console


def _at(item: dict) -> str:
    """The stage the item is at: the one running, waiting or failed; the last one when done."""
    return item.get("next_stage") or item.get("stage") or "-"


def last_log(attempts: list[dict]) -> tuple[dict | None, list[str]]:
    """The newest attempt with output, and its lines (the log tail, else the error detail)."""
    for attempt in reversed(attempts):
        text = attempt.get("log_tail") or attempt.get("error_detail") or ""
        if text.strip():
            return attempt, text.rstrip().splitlines()
    return None, []


@dataclass(frozen=True)
class Copied:
    text: str
    parts: list[str]  # what is in it, for the toast: "class", "message", "suggestion", "12 log lines"


def error_copy(item: dict, attempts: list[dict], lines: int = COPY_LOG_LINES) -> Copied:
    """The selected item's error (class, message, suggestion) and its log tail, as one inert text."""
    out = [f"{one_line(item['id'])}  {one_line(item['status'])} at {one_line(_at(item))}"]
    parts: list[str] = []
    if item.get("error_class"):
        when = f" at {iso(item['error_at'])}" if item.get("error_at") else ""
        out.append(f"error: {one_line(item['error_class'])}{when}")
        parts.append("class")
    if item.get("error_message"):
        out.append(inert(item["error_message"]))
        parts.append("message")
    if _suggestion(item):
        out.append(f"suggestion: {inert(_suggestion(item))}")
        parts.append("suggestion")
    attempt, log = last_log(attempts)
    if attempt is not None:
        tail = log[-lines:]
        out.append(f"log tail (attempt #{attempt['number']}, {one_line(attempt['stage'])}):")
        out += [f"  {inert(line)}" for line in tail]
        parts.append(f"{len(tail)} log line{'s' if len(tail) != 1 else ''}")
    return Copied("\n".join(out) + "\n", parts)


def full_report(item: dict, attempts: list[dict], checkpoints: list[dict], events: list[dict]) -> str:
    """Everything ewg knows of one item, for the pager: the error, every attempt with its whole stored
    log, the checkpoints and the audit trail. Times are ISO 8601 UTC."""
    out = [
        f"{one_line(item['kind'])} {one_line(item['id'])}",
        f"show: {one_line(item.get('show') or '')}   title: {one_line(item.get('title') or '')}",
        f"status: {one_line(item['status'])}   stage done: {one_line(item.get('stage') or '-')}   "
        f"next: {one_line(item.get('next_stage') or '-')}   attempts: {item.get('attempts') or 0}",
    ]
    if item.get("error_class"):
        when = f" at {iso(item['error_at'])}" if item.get("error_at") else ""
        out += ["", f"error: {one_line(item['error_class'])}{when}", inert(item.get("error_message") or "")]
    if _suggestion(item):
        out.append(f"suggestion: {inert(_suggestion(item))}")
    if item.get("blocked_reason"):
        out += ["", f"blocked: {inert(item['blocked_reason'])}"]
    out += ["", f"attempts ({len(attempts)}):"]
    for a in attempts:
        ended = f" to {iso(a['ended_at'])}" if a.get("ended_at") else ""
        out.append(
            f"#{a['number']} {one_line(a['stage'])}  {one_line(a.get('outcome') or 'running')}  "
            f"{iso(a['started_at']) if a.get('started_at') else ''}{ended}  "
            f"{one_line(a.get('error_class') or '')} {one_line(a.get('error_message') or '')}".rstrip()
        )
        if a.get("decision"):
            out.append(f"    decision: {one_line(a['decision'])}")
        text = a.get("log_tail") or a.get("error_detail") or ""
        if text.strip():
            out += [f"    | {line}" for line in inert(text.rstrip()).splitlines()]
    if not attempts:
        out.append("  (no attempts recorded)")
    out += ["", f"checkpoints ({len(checkpoints)}):"]
    for c in checkpoints:
        state = "stale" if c.get("stale") else "skipped" if c.get("skipped") else "ok"
        out.append(
            f"  {one_line(c['stage'])}  {len(c.get('files') or [])} file(s)  {c.get('bytes', 0)} bytes  "
            f"{iso(c['created_at'])}  {state}"
        )
    out += ["", f"audit trail ({len(events)} newest first):"]
    for e in events:
        reason = f"  reason: {one_line(e['reason'])}" if e.get("reason") else ""
        result = f"  -> {one_line(e['result'])}" if e.get("result") else ""
        out.append(f"  {iso(e['at'])}  {one_line(e['actor'])}  {one_line(e['verb'])}{reason}{result}")
    return "\n".join(out) + "\n"


class NoPager(Exception):
    """No pager can be run; the message says why and what to set."""


def pager_argv(environ: Mapping[str, str] | None = None) -> list[str]:
    """`$PAGER` split as a shell would (`less -R`, `"/opt/my pager" -x`), else less, else more."""
    environ = os.environ if environ is None else environ
    configured = (environ.get("PAGER") or "").strip()
    if configured:
        try:
            argv = shlex.split(configured)
        except ValueError as exc:
            raise NoPager(
                f"PAGER={configured!r} cannot be read as a command ({exc}); fix it or unset it."
            ) from None
        if not argv or shutil.which(argv[0]) is None:
            raise NoPager(
                f"PAGER={configured!r}: {argv[0] if argv else 'the command'} was not found. "
                "Install it, point PAGER at a pager that exists, or unset PAGER to use less."
            )
        return argv
    for argv in FALLBACK_PAGERS:
        if shutil.which(argv[0]):
            return list(argv)
    raise NoPager("No pager was found: PAGER is not set and neither less nor more is installed. Set PAGER.")
