"""Getting an error out: copy the selected item's error and log tail (OSC 52), open it all in $PAGER."""

from __future__ import annotations

import base64
import contextlib
import os
import stat

from console_fixtures import EP
from pilot_helpers import make_app, move_to, ready, wait_for

from engine import errors
from ewg_tui import export
from ewg_tui.screens.item_detail import ItemDetailScreen

HOSTILE = "bad \x1b]52;c;ZXZpbA==\x07 and \x1b[2J \u202e end"


def _toasts(app) -> list[str]:
    return [n.message for n in app._notifications]


def _plant_hostile_log(ws, item_id: str) -> None:
    with ws.store.write() as conn:
        conn.execute("UPDATE items SET error_message=? WHERE id=?", (f"message {HOSTILE}", item_id))
        conn.execute(
            "UPDATE attempts SET log_tail=? WHERE item_id=?", (f"line one\nline {HOSTILE}\nlast", item_id)
        )


def _pager_script(tmp_path) -> tuple[str, os.PathLike]:
    out = tmp_path / "paged.txt"
    script = tmp_path / "fake pager.sh"  # a space in the path: PAGER is split as a shell would
    script.write_text(f'#!/bin/sh\necho "args: $*" > "{out}.args"\ncat > "{out}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return f"'{script}' --flag", out


class _FakeWriter:
    """Stands in for the terminal driver: records what copy_to_clipboard writes (the OSC 52 sequence)."""

    def __init__(self) -> None:
        self.written: list[str] = []

    def write(self, data: str) -> None:
        self.written.append(data)


async def test_the_copy_key_copies_error_class_message_suggestion_and_log_tail_inert(seeded):
    ws, clock = seeded
    _plant_hostile_log(ws, EP[7])
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[7])
        await pilot.press("y")
        await wait_for(pilot, lambda: app.clipboard, what="the clipboard")
        text = app.clipboard
        assert EP[7] in text and "error: persistent" in text
        assert "message bad" in text and "line one" in text and "last" in text
        assert "suggestion: The input is bad" in text and "(R)" not in text  # words, not the console's keys
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
        assert "\\x1b]52;c;ZXZpbA==\\x07" in text and "\\u202e" in text  # shown, not acted on
        await wait_for(pilot, lambda: any("Copied to the clipboard" in t for t in _toasts(app)), what="toast")
        toast = next(t for t in _toasts(app) if "Copied to the clipboard" in t)
        assert EP[7] in toast and "class, message, suggestion and 3 log lines" in toast
        assert "\x1b" not in toast


async def test_copy_writes_one_osc52_sequence_whose_payload_is_the_inert_text(seeded, monkeypatch):
    ws, clock = seeded
    _plant_hostile_log(ws, EP[7])
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[7])
        writer = _FakeWriter()
        monkeypatch.setattr(app, "_driver", writer)
        screen.action_copy_error()
        monkeypatch.undo()
        assert len(writer.written) == 1
        sequence = writer.written[0]
        assert sequence.startswith("\x1b]52;c;") and sequence.endswith("\a")
        payload = base64.b64decode(sequence[len("\x1b]52;c;") : -1]).decode()
        assert payload == app.clipboard and "\x1b" not in payload


async def test_copy_in_the_item_detail_and_nothing_to_copy_says_so(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[8])
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ItemDetailScreen), what="detail")
        await wait_for(pilot, lambda: app.screen._shown is not None, what="detail read")
        await pilot.press("y")
        await wait_for(pilot, lambda: app.clipboard, what="the clipboard")
        assert "missing_dependency" in app.clipboard and "llama3" in app.clipboard
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, what="back on the main screen")
        await move_to(pilot, screen.episodes, EP[10])  # queued, never ran: no error, no log
        app.copy_to_clipboard("")
        await pilot.press("y")
        await wait_for(pilot, lambda: any("Nothing to copy" in t for t in _toasts(app)), what="toast")
        assert app.clipboard == ""


async def test_the_pager_key_hands_the_full_inert_detail_to_PAGER(seeded, tmp_path, monkeypatch):
    ws, clock = seeded
    _plant_hostile_log(ws, EP[7])
    pager, out = _pager_script(tmp_path)
    monkeypatch.setenv("PAGER", pager)
    app = make_app(ws, clock)
    suspended = []

    @contextlib.contextmanager
    def suspend():  # the test terminal cannot really suspend; the pager runs as it would inside
        suspended.append(True)
        yield

    monkeypatch.setattr(app, "suspend", suspend)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[7])
        await pilot.press("v")
        await wait_for(pilot, lambda: out.exists() and out.read_text(), what="the pager's input")
        assert suspended == [True]
        text = out.read_text()
        assert (tmp_path / "paged.txt.args").read_text().strip() == "args: --flag"
        assert f"episode {EP[7]}" in text and "error: persistent" in text
        assert "attempts (1):" in text and "    | line one" in text and "audit trail" in text
        assert "\x1b" not in text and "\u202e" not in text and "\\x1b[2J" in text
        assert "Z" in text.split("attempts (1):")[1].splitlines()[1]  # ISO 8601 UTC times
        # and from the item detail
        out.unlink()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ItemDetailScreen), what="detail")
        await pilot.press("v")
        await wait_for(pilot, lambda: out.exists() and out.read_text(), what="the pager's input again")
        assert f"episode {EP[7]}" in out.read_text()


async def test_no_pager_or_no_suspend_is_a_clear_toast(seeded, monkeypatch):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[7])
        monkeypatch.setenv("PAGER", "no-such-pager-here --x")
        await pilot.press("v")
        await wait_for(pilot, lambda: any("no-such-pager-here" in t for t in _toasts(app)), what="toast")
        assert any("was not found" in t and "unset PAGER" in t for t in _toasts(app))
        monkeypatch.setenv("PAGER", "cat")  # found, but the headless test terminal cannot suspend
        await pilot.press("v")
        await wait_for(pilot, lambda: any("cannot be handed" in t for t in _toasts(app)), what="toast")
        assert any("y copies the error" in t for t in _toasts(app))


def test_pager_argv_respects_PAGER_with_arguments_then_less_then_more(monkeypatch, tmp_path):
    assert export.pager_argv({"PAGER": "cat -v"}) == ["cat", "-v"]
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    for name in ("more", "less"):
        tool = empty / name
        tool.write_text("#!/bin/sh\n")
        tool.chmod(0o700)
        assert export.pager_argv({}) == [name]  # less when there, else more
    (empty / "less").unlink()
    (empty / "more").unlink()
    for environ, says in (({}, "neither less nor more"), ({"PAGER": "'unclosed"}, "cannot be read")):
        try:
            export.pager_argv(environ)
        except export.NoPager as exc:
            assert says in str(exc)
        else:
            raise AssertionError("no pager should have been found")


def test_the_copied_text_drops_key_letters_an_older_ewg_stored():
    item = {
        "id": "ep1",
        "status": "failed",
        "stage": None,
        "next_stage": "discovered",
        "error_class": errors.PERSISTENT,
        "error_message": "no video",
        "error_suggestion": "then force reprocess (R), or skip the stage (s).",
    }
    copied = export.error_copy(item, [])
    assert "suggestion: then force reprocess, or skip the stage." in copied.text
    assert copied.parts == ["class", "message", "suggestion"]
