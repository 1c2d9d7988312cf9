"""Text from outside made inert before it reaches a terminal (ARCHITECTURE.md, "The boundary").

File names, titles, stage output, error messages, reasons and ids come from people and programs that
ewg does not control. Written to a terminal raw, an escape sequence in them can retitle the window,
clear the screen, move the cursor over earlier lines, or write the operator's clipboard (OSC 52); a
bidi override can make `txt.exe` read as `exe.txt`; a newline or a carriage return can forge a line of
`ewg log`. Every printer (the CLI, `ewg run`'s log lines, the console's cells, panes and toasts) passes
such text through `inert()` or `one_line()` here, the one place that decides what is shown.

What is shown instead (one style, Python's own escapes, so `\\x1b` reads the same in every terminal and
can be pasted into Python to get the original back):

- C0 controls, DEL and C1 controls: `\\x1b`, `\\x07`, `\\x7f`, `\\x9b`; `\\r` for a carriage return
  (inert() keeps `\\r\\n` as a plain line break); `\\n` for a newline in one_line() only;
- tabs become spaces (inert() to the next multiple of 8 columns, one_line() one space);
- format characters (bidi embeddings, overrides and isolates U+202A-202E and U+2066-2069, zero-width
  spaces and joiners, the byte-order mark, soft hyphen, invisible tags) and the line and paragraph
  separators U+2028/U+2029: `\\u202e`, `\\u2028`, `\\U000e0041`;
- bytes of a file name that are not UTF-8 (Python decodes them to surrogate escapes): `\\xff`, the byte;
  any other lone surrogate: `\\ud800`.

A backslash itself is not doubled: the shown form is for people, made so that nothing in it acts on the
terminal; it is not an encoding. Text stays raw in the database, in files and in `--json` output (JSON
escapes every control and non-ASCII character itself).
"""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

# Every code point of the categories Cc, Cf, Zl, Zp and Cs, except tab and newline (handled apart).
# Written out rather than built from unicodedata at import (a scan of 1.1M code points costs 0.35 s on
# every `ewg` call, measured here); tests/hardening/test_boundary_text.py checks it covers the running Python's table.
_FORMAT = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e"
    "\u2060-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e007f"
)
_CONTROL = "\x00-\x08\x0b-\x1f\x7f-\x9f"
_SURROGATE = "\ud800-\udfff"
_UNSAFE = re.compile(f"[{_CONTROL}{_FORMAT}{_SURROGATE}]")
_UNSAFE_OR_TAB = re.compile(f"[\t{_CONTROL}{_FORMAT}{_SURROGATE}]")
_UNSAFE_IN_LINE = re.compile(f"[\t\n{_CONTROL}{_FORMAT}{_SURROGATE}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": " "}


def _shown(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogate escape of one byte that is not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def inert(value: object) -> str:
    """Text safe to write to a terminal, line breaks kept (a log tail, a multi-line message).

    None is shown as "" and anything else as its str(); see the module docstring for what is shown
    in place of each control character."""
    text = "" if value is None else value if isinstance(value, str) else str(value)
    if text.isprintable() or not _UNSAFE_OR_TAB.search(text):
        return text  # the common case: nothing to do, no copy (isprintable() is 6x faster than a search)
    if "\r\n" in text:
        text = text.replace("\r\n", "\n")
    text = _UNSAFE.sub(_shown, text)
    return text.expandtabs(8) if "\t" in text else text


def one_line(value: object) -> str:
    """Like inert(), and a newline is shown as `\\n` too: a value that cannot start a line of its own
    (a reason, a title, an id, a message inside a table cell or a log line)."""
    text = "" if value is None else value if isinstance(value, str) else str(value)
    if text.isprintable() or not _UNSAFE_IN_LINE.search(text):
        return text
    return _UNSAFE_IN_LINE.sub(_shown, text)


def is_utf8(text: str) -> bool:
    """False for a name the file system decoded with surrogate escapes (bytes that are not UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class InertFormatter(logging.Formatter):
    """A logging.Formatter whose output cannot act on a terminal: the message (with its arguments) on
    one line, a traceback kept on its lines but inert."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)  # other handlers still see the original
        record.msg, record.args = one_line(record.getMessage()), None
        return inert(super().format(record))


class InertStream(io.TextIOBase):
    """A text stream that writes inert() text to the stream it wraps; everything else is the wrapped
    stream's (fileno, isatty, encoding, buffer). The CLI's backstop: argparse's messages, a traceback,
    anything printed without passing through inert() first."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.wrapped = stream

    def write(self, text: str) -> int:
        self.wrapped.write(inert(text))
        return len(text)

    def writelines(self, lines) -> None:  # type: ignore[override]
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.wrapped.flush()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.wrapped.fileno()

    def isatty(self) -> bool:
        return self.wrapped.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.wrapped, "encoding", "utf-8")

    def __getattr__(self, name: str):
        return getattr(self.wrapped, name)


@contextmanager
def inert_output() -> Iterator[None]:
    """sys.stdout and sys.stderr write inert text for the duration (and are put back after)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = InertStream(saved[0]), InertStream(saved[1])  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
