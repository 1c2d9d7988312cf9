"""Text that reaches a terminal: nothing from outside acts on it, and no value forges a line.

A hostile corpus (escape sequences that retitle the window, clear the screen, move the cursor or write
the clipboard; C1 controls; bidi overrides; zero-width characters; a carriage return that overwrites; a
newline that forges an `ewg log` line; bytes that are not UTF-8) is pushed through every outside source
a workspace has: a title and a show, a stage's stdout and stderr (hence the error message and the log
tail), `--reason`, the actor of a verb, a folder name in the items folder, ids given on the command line.
Each CLI command's stdout and stderr must hold none of it raw, and so must the console's rendered screen
(the strips Textual writes to the terminal); both show the inert form of engine/text.py instead.
A reason over 1 KiB is refused (exit 2 with the message), in the CLI and in the console's dialog.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from ewgtest import fast_demo_text  # noqa: E402

from engine import ownership  # noqa: E402
from engine.db import queries  # noqa: E402
from engine.text import InertFormatter, inert, is_utf8, one_line  # noqa: E402
from engine.verbs import REASON_MAX_BYTES, Operator  # noqa: E402
from engine.workspace import add_episode, init_workspace, open_workspace  # noqa: E402
from ewg_tui import cli  # noqa: E402

FORGED = "2026-12-02T00:00:00Z  root       retry            everything"

# (case, what arrives from outside, how a terminal must show it)
CORPUS = [
    ("osc-window-title", "\x1b]0;pwned\x07", r"\x1b]0;pwned\x07"),
    ("csi-clear-screen", "\x1b[2J\x1b[H", r"\x1b[2J\x1b[H"),
    ("csi-colour-cursor-up", "\x1b[31;1mred\x1b[5A", r"\x1b[31;1mred\x1b[5A"),
    ("osc52-clipboard-write", "\x1b]52;c;cm0gLXJmIH4K\x07", r"\x1b]52;c;cm0gLXJmIH4K\x07"),
    (
        "osc8-hyperlink",
        "\x1b]8;;http://evil/\x1b\\click\x1b]8;;\x1b\\",
        r"\x1b]8;;http://evil/\x1b\click\x1b]8;;\x1b" + "\\",
    ),
    ("c1-csi", "\x9b2J", r"\x9b2J"),
    ("c1-osc-st", "\x9d0;pwned\x9c", r"\x9d0;pwned\x9c"),
    ("bell-backspace", "ok\x07\x08\x08\x08bad", r"ok\x07\x08\x08\x08bad"),
    ("nul-del", "a\x00b\x7fc", r"a\x00b\x7fc"),
    ("bidi-override", "invoice\u202egpj.exe", r"invoice\u202egpj.exe"),
    ("bidi-isolate", "\u2067abc\u2069def", r"\u2067abc\u2069def"),
    ("zero-width", "adm\u200bin\u200d\ufeff", r"adm\u200bin\u200d\ufeff"),
    ("line-separator", "one\u2028two\u2029three", r"one\u2028two\u2029three"),
    ("cr-overwrite", "FAILED\rsucceeded", r"FAILED\rsucceeded"),
    ("newline-forged-log-line", "ok\n" + FORGED, r"ok\n" + FORGED),
    ("invalid-utf8", os.fsdecode(b"bad\xff\xfename"), r"bad\xff\xfename"),
]
CASES = [pytest.param(payload, shown, id=case) for case, payload, shown in CORPUS]
PAIRS = [pytest.param((payload, shown), id=case) for case, payload, shown in CORPUS]  # for a fixture

# What must never reach a terminal: C0 controls but newline, DEL, C1, bidi and zero-width format
# characters, line/paragraph separators, lone surrogates (unprintable: the write itself would fail).
RAW = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u00ad\u061c\u200b-\u200f\u202a-\u202e\u2028\u2029\u2060-\u206f\ufeff\ud800-\udfff]"
)


def assert_inert(text: str, where: str) -> None:
    found = sorted({repr(c) for c in RAW.findall(text)})
    assert not found, f"{where}: {', '.join(found)} reached the terminal raw:\n{text[:2000]}"


def no_forged_line(text: str, where: str) -> None:
    assert not any(line.startswith(FORGED[:20]) for line in text.splitlines()), f"{where}: a line was forged"


def stored(payload: str) -> str:
    """SQLite keeps only UTF-8: bytes that are not reach the database as U+FFFD (as stage output does)."""
    return (
        payload if is_utf8(payload) else payload.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    )


def file_name_able(payload: str) -> bool:
    return "\x00" not in payload and "/" not in payload


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def both(self) -> str:
        return self.out + self.err


def ewg(root: Path, *args: str) -> Run:
    """`ewg` in this process, its stdout and stderr taken exactly as a terminal would get them."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(["--workspace", str(root), *args])
        except SystemExit as exc:
            code = int(exc.code or 0)
        except Exception as exc:  # a traceback, the way Python would print it: part of what is checked
            import traceback

            err.write("".join(traceback.format_exception(exc)))
            code = 1
    return Run(code, out.getvalue(), err.getvalue())


def ewg_process(root: Path, *args: str) -> Run:
    """`ewg` as its own process: the bytes it writes, undecodable ones kept (as surrogates) to be found."""
    proc = subprocess.run(
        [sys.executable, "-m", "ewg_tui.cli", "--workspace", str(root), *args],
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    out, err = (raw.decode("utf-8", "surrogateescape") for raw in (proc.stdout, proc.stderr))
    return Run(proc.returncode, out, err)


# The first episode stage: prints the payload's bytes on stdout and stderr, then fails persistent (65).
STAGE_SCRIPT = (
    "import sys\n"
    "data = bytes.fromhex(open(sys.argv[1]).read())\n"
    "sys.stdout.buffer.write(b'out ' + data + b'\\n')\n"
    "sys.stderr.buffer.write(b'err ' + data + b'\\n')\n"
    "sys.exit(65)\n"
)
# The alert command: fails, saying the payload on stderr (the engine logs why an alert was not delivered).
ALERT_SCRIPT = (
    "import sys\nsys.stderr.buffer.write(b'alert ' + bytes.fromhex(open(sys.argv[1]).read()))\nsys.exit(1)\n"
)
ITEM = "hostile_ep001_2026-11-29"


@dataclass
class Hostile:
    root: Path
    payload: str
    shown: str
    runs: dict[str, Run] = field(default_factory=dict)

    @property
    def shown_stored(self) -> str:
        """How the payload shows once it went through the database or a decoder (U+FFFD for non-UTF-8)."""
        return self.shown if is_utf8(self.payload) else stored(self.payload)


@pytest.fixture(scope="module", params=PAIRS)
def hostile(request, tmp_path_factory) -> Hostile:
    """A workspace whose one episode carries the payload everywhere outside text can come in."""
    payload, shown = request.param
    root = tmp_path_factory.mktemp("text") / "ws"
    data = root.parent / "stage-output.hex"
    data.write_text(os.fsencode(payload).hex())
    stage = (
        "[stages.episode.transcribed]\n"
        'kind = "command"\n'
        f"command = {json.dumps([sys.executable, '-c', STAGE_SCRIPT, str(data)])}\n"
    )
    alert = json.dumps([sys.executable, "-c", ALERT_SCRIPT, str(data)])
    ws = init_workspace(root, fast_demo_text(faults=False, extra=stage, command=alert, max_tries="1"))
    add_episode(
        ws,
        ITEM,
        source="/sources/show/ep1.mp4",
        show=f"show {stored(payload)}",
        title=f"title {stored(payload)}",
    )
    Operator(ws, actor=f"op {stored(payload)}").clear_cache([ITEM])  # an actor from outside (the audit log)
    ws.close()
    h = Hostile(root, payload, shown)
    h.runs["run"] = ewg_process(root, "run", "--until-idle")
    h.runs["clear-cache --reason"] = ewg(root, "clear-cache", ITEM, "--reason", f"why {payload}")
    h.runs["pause --reason"] = ewg(root, "pause", "--reason", f"hold {payload}")
    if file_name_able(payload):  # an items folder without its marker, holding a folder ewg did not make:
        (root / "items" / f"stray {payload}").mkdir()  # doctor names it (and nothing is deleted there)
        (root / "items" / ownership.ITEMS_MARKER).unlink()
    return h


@pytest.fixture(scope="module")
def plain_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plain") / "ws"
    ws = init_workspace(root, fast_demo_text(faults=False))
    add_episode(ws, ITEM, source="/sources/show/ep1.mp4")
    ws.close()
    return root


# -- engine/text.py itself ---------------------------------------------------------------------------
@pytest.mark.parametrize("payload, shown", CASES)
def test_one_line_shows_every_hostile_string_inert(payload, shown):
    assert one_line(payload) == shown
    assert_inert(one_line(payload), "one_line")
    assert_inert(inert(payload), "inert")
    assert one_line(one_line(payload)) == one_line(payload)  # idempotent: printing twice changes nothing


def test_inert_keeps_lines_and_tabs_as_spaces_and_folds_crlf():
    assert inert("a\tb\r\nc\rd\n") == "a       b\nc\\rd\n"
    assert one_line("a\tb\r\nc") == "a b\\r\\nc"
    assert inert(None) == "" and one_line(None) == "" and one_line(42) == "42"
    assert inert("plain é 日本 ✓") == "plain é 日本 ✓"


def test_every_control_format_and_separator_character_is_covered():
    """The table in engine/text.py is written out (fast import); it must hold every code point of Cc, Cf,
    Zl, Zp and Cs in this Python's Unicode database, or a new format character would slip through."""
    missed = [
        f"U+{code:04X}"
        for code in range(0x110000)
        if unicodedata.category(chr(code)) in ("Cc", "Cf", "Zl", "Zp", "Cs")
        and chr(code) != "\n"
        and one_line(chr(code)) == chr(code)
    ]
    assert missed == []


def test_log_formatter_puts_the_message_on_one_inert_line():
    import logging

    record = logging.LogRecord(
        "ewg.engine", logging.WARNING, __file__, 1, "stage said %s", ("x\x1b[2J\ny",), None
    )
    assert InertFormatter("%(levelname)s %(message)s").format(record) == "WARNING stage said x\\x1b[2J\\ny"
    assert record.getMessage() == "stage said x\x1b[2J\ny"  # other handlers still get the original


# -- the CLI -----------------------------------------------------------------------------------------
def test_run_lines_are_inert(hostile):
    """`ewg run` as a process: its event lines, and the engine's warnings (here: why an alert was not
    delivered, quoting the alert command's stderr) through the stderr handler with InertFormatter."""
    run = hostile.runs["run"]
    assert run.code == 0, run.both
    assert_inert(run.both, "ewg run")
    no_forged_line(run.both, "ewg run")
    assert "failed" in run.out


def test_alert_delivery_errors_are_inert(hostile):
    """A failing alert command's stderr comes back in `ewg run`'s log lines and in `ewg alerts test`."""
    assert "alert " in hostile.runs["run"].err, hostile.runs["run"].both  # the engine's warning line
    test = ewg(hostile.root, "alerts", "test")
    assert test.code == 1, test.both
    assert_inert(test.both, "ewg alerts test")
    no_forged_line(test.both, "ewg alerts test")
    assert f"alert {hostile.shown_stored}" in test.out


def test_reason_goes_into_the_audit_log_and_ewg_log_shows_it_on_one_line(hostile):
    assert hostile.runs["clear-cache --reason"].code == 0, hostile.runs["clear-cache --reason"].both
    log = ewg(hostile.root, "log")
    assert log.code == 0, log.both
    assert_inert(log.both, "ewg log")
    no_forged_line(log.both, "ewg log")
    assert f"reason: why {hostile.shown}" in log.out
    assert f"op {hostile.shown_stored}" in log.out  # the actor


def test_item_log_shows_stage_output_and_error_inert(hostile):
    log = ewg(hostile.root, "log", ITEM)
    assert log.code == 0, log.both
    assert_inert(log.both, "ewg log ID")
    no_forged_line(log.both, "ewg log ID")
    assert "log tail of attempt #1" in log.out
    tail = log.out.split("log tail of attempt #1", 1)[1].splitlines()[1:]
    assert tail and all(line.startswith("    ") for line in tail)  # indented: no stage line passes for ewg's


def test_status_and_failures_are_inert(hostile):
    status = ewg(hostile.root, "status")
    assert status.code == 0, status.both
    assert_inert(status.both, "ewg status")
    no_forged_line(status.both, "ewg status")
    assert f"PAUSED (hold {hostile.shown})" in status.out
    failures = ewg(hostile.root, "failures")
    assert failures.code == 0, failures.both
    assert_inert(failures.both, "ewg failures")
    no_forged_line(failures.both, "ewg failures")


def test_doctor_shows_folder_names_and_reasons_inert(hostile):
    doctor = ewg(hostile.root, "doctor")
    assert_inert(doctor.both, "ewg doctor")
    no_forged_line(doctor.both, "ewg doctor")
    assert f"hold {hostile.shown}" in doctor.out
    if file_name_able(hostile.payload):
        assert f"stray {hostile.shown}" in doctor.out


@pytest.mark.parametrize("payload, shown", CASES)
@pytest.mark.parametrize("command", ["retry", "log", "reprocess", "status"])
def test_ids_and_arguments_from_the_command_line_are_echoed_inert(plain_root, payload, shown, command):
    run = ewg(plain_root, command, payload)
    assert run.code == 2, run.both
    assert_inert(run.both, f"ewg {command} ID")
    assert "Traceback" not in run.err


# -- reasons are capped ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "reason, taken",
    [
        ("x" * REASON_MAX_BYTES, True),
        ("x" * (REASON_MAX_BYTES + 1), False),
        ("é" * (REASON_MAX_BYTES // 2), True),  # bytes, not characters: 1024 bytes
        ("é" * (REASON_MAX_BYTES // 2 + 1), False),
        ("x" * 100_000, False),
    ],
    ids=["1024-ascii", "1025-ascii", "1024-bytes-of-e-acute", "1026-bytes-of-e-acute", "100k"],
)
@pytest.mark.parametrize(
    "verb", [("pause",), ("stop",), ("deep-clean",)], ids=["pause", "stop", "deep-clean"]
)
def test_a_reason_over_1_kib_is_refused_with_exit_2(tmp_path, reason, taken, verb):
    root = tmp_path / "ws"
    ws = init_workspace(root, fast_demo_text(faults=False))
    add_episode(ws, ITEM, source="/sources/show/ep1.mp4")
    before = len(queries.events(ws.store, limit=1000))
    ws.close()
    run = ewg(root, *verb, "--reason", reason)
    ws = open_workspace(root)
    events = queries.events(ws.store, limit=1000)
    ws.close()
    if taken:
        assert run.code == 0, run.both
        assert events[0]["reason"] == reason
    else:
        assert run.code == 2, run.both
        assert "at most 1024 bytes" in run.err and "Traceback" not in run.err
        assert len(events) == before  # nothing recorded, nothing changed


def test_a_reason_that_is_not_utf8_is_kept_readable_not_a_traceback(tmp_path):
    root = tmp_path / "ws"
    init_workspace(root, fast_demo_text(faults=False)).close()
    run = ewg(root, "pause", "--reason", os.fsdecode(b"caf\xe9 closed"))
    assert run.code == 0, run.both
    log = ewg(root, "log")
    assert "reason: caf\\xe9 closed" in log.out


# -- the console -----------------------------------------------------------------------------------
sys.path.insert(0, str(ROOT / "tests" / "tui"))

from console_fixtures import seeded_workspace  # noqa: E402
from pilot_helpers import make_app, move_to, ready, wait_for  # noqa: E402
from textual.widgets import Input  # noqa: E402

from ewg_tui.screens.audit_log import AuditLogScreen  # noqa: E402
from ewg_tui.screens.confirm_verb import ConfirmVerbScreen  # noqa: E402
from ewg_tui.screens.failure_groups import FailureGroupsScreen  # noqa: E402
from ewg_tui.screens.item_detail import ItemDetailScreen  # noqa: E402


def screen_text(app) -> str:
    """Every character the console puts on the terminal now: the strips Textual's compositor renders
    for the whole screen (the toasts and a modal's background included), one line each."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def shows(pilot, text: str, what: str) -> str:
    await wait_for(pilot, lambda: text in screen_text(pilot.app), what=what)
    return screen_text(pilot.app)


async def test_console_shows_outside_text_inert(hostile):
    """The table, the header, the filter's suggestions, the error pane, a toast, the item detail screen,
    the audit screen and the failure groups."""
    ws = open_workspace(hostile.root)
    app = make_app(ws, ws.clock)
    shown = hostile.shown_stored
    try:
        async with app.run_test(size=(200, 50), notifications=True) as pilot:
            screen = await ready(pilot)
            await move_to(pilot, screen.episodes, ITEM)
            text = await shows(pilot, "exited with code 65", "the error pane")
            assert_inert(text, "main screen")
            assert f"hold {hostile.shown}"[:24] in text  # the header's pause reason
            assert f"title {shown}"[:20] in text  # the table's title cell (28 wide, cut with …)
            await pilot.press("slash", *"show:")  # the filter suggests the workspace's show names
            text = await shows(pilot, f'show:"show {shown}', "the show suggested")
            assert_inert(text, "the filter's suggestion")
            await pilot.press("escape")
            screen.episodes.focus()
            app.notify(f"note {hostile.payload}", title=f"from {hostile.payload}", severity="error")
            text = await shows(pilot, "note ", "the toast")
            assert_inert(text, "a toast")
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, ItemDetailScreen), what="item detail")
            text = await shows(pilot, f"title {shown}", "the detail head")
            await shows(pilot, "out ", "the log tail")
            assert_inert(screen_text(app), "item detail")
            await pilot.press("escape")
            await pilot.press("l")
            await wait_for(pilot, lambda: isinstance(app.screen, AuditLogScreen), what="the audit screen")
            text = await shows(pilot, f"why {hostile.shown}", "the reason in the audit log")
            assert f"op {shown}" in text  # the actor
            assert_inert(text, "audit screen")
            assert not any(line.lstrip("│ ").startswith(FORGED[:20]) for line in text.splitlines())
            await pilot.press("escape")
            await pilot.press("f")  # retry a failure group: the groups, with their messages
            await wait_for(pilot, lambda: isinstance(app.screen, FailureGroupsScreen), what="failure groups")
            text = await shows(pilot, "exited with code 65", "the group's message")
            assert_inert(text, "failure groups")
    finally:
        ws.close()


async def press_yes(pilot, dialog) -> None:
    await pilot.click(dialog.query_one("#yes"))


async def test_console_refuses_a_reason_over_1_kib_in_the_dialog(tmp_path):
    ws, clock = seeded_workspace(tmp_path / "ws")
    app = make_app(ws, clock)
    events = len(queries.events(ws.store, limit=1000))
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await pilot.press("A")  # retry all failed: asks first, with a reason
            dialog = await wait_for(
                pilot, lambda: isinstance(app.screen, ConfirmVerbScreen) and app.screen, what="dialog"
            )
            dialog.query_one("#reason", Input).value = "x" * 1800
            await press_yes(pilot, dialog)
            text = await shows(pilot, "at most 1024 bytes", "the reason's problem")
            assert isinstance(app.screen, ConfirmVerbScreen), "the dialog stays open to shorten the reason"
            reason = dialog.query_one("#reason", Input)
            await wait_for(pilot, lambda: app.focused is reason, what="the cursor back in the reason")
            assert "1800 bytes long" in text
            assert len(queries.events(ws.store, limit=1000)) == events  # nothing applied
            dialog.query_one("#reason", Input).value = "short enough"
            await pilot.pause(0.3)  # past the button's 0.2 s press effect: a second press in it can be lost
            await press_yes(pilot, dialog)
            await wait_for(
                pilot, lambda: not isinstance(app.screen, ConfirmVerbScreen), what="the dialog to close"
            )
            await wait_for(
                pilot,
                lambda: queries.events(ws.store, limit=1)[0]["reason"] == "short enough",
                what="the verb",
            )
    finally:
        ws.close()


async def test_pasted_control_characters_stay_inert_in_the_reason_input(tmp_path):
    ws, clock = seeded_workspace(tmp_path / "ws")
    app = make_app(ws, clock)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await pilot.press("A")
            dialog = await wait_for(
                pilot, lambda: isinstance(app.screen, ConfirmVerbScreen) and app.screen, what="dialog"
            )
            field = dialog.query_one("#reason", Input)
            field.focus()
            await pilot.pause()
            field.insert_text_at_cursor("ok \x1b]0;pwned\x07 \u202eevil")  # what a paste inserts
            await pilot.pause(0.1)
            assert field.value == "ok \\x1b]0;pwned\\x07 \\u202eevil"
            assert_inert(screen_text(app), "the reason input")
    finally:
        ws.close()
