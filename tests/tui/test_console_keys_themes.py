"""Themes and keys are remembered: `[console] theme`, `--theme`, a picked theme saved per user, and a
keymap by binding id whose keys every hint, toast and suggestion names."""

from __future__ import annotations

import io
import re
import stat
import tokenize
from pathlib import Path

import pytest
from console_fixtures import EP, seeded_workspace
from pilot_helpers import make_app, move_to, ready, wait_for
from textual.widgets._footer import FooterKey

from engine import config as configmod
from engine import errors
from engine.config import ConfigError
from ewg_tui import cli, keys, themes
from ewg_tui.app import EwgApp
from ewg_tui.screens.help import HelpScreen
from ewg_tui.screens.time_view import TimeViewScreen
from ewg_tui.widgets.error_detail import ErrorDetail
from ewg_tui.widgets.first_run_hint import FirstRunHint

ROOT = Path(__file__).resolve().parents[2]
KEYMAP = {"verb": {"retry": "t"}, "main.time_view": "T", "main.help": "f1", "main.live": "w"}


def _toasts(app) -> list[str]:
    return [n.message for n in app._notifications]


def _pane_text(screen) -> str:
    return str(screen.query_one(ErrorDetail).query_one("#error-text").render())


async def test_a_keymap_moves_keys_and_every_hint_names_the_active_key(seeded, tmp_path, monkeypatch):
    ws, clock = seeded
    ws.config.console.keymap = KEYMAP  # as read from ewg.toml ([console.keymap], verb.retry unquoted)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    app = make_app(ws, clock, first_run_hint=True)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        hint = str(screen.query_one(FirstRunHint).render())
        assert hint.startswith("First run: f1 explains")
        await move_to(pilot, screen.episodes, EP[8])  # missing dependency: "then retry"
        await wait_for(pilot, lambda: "then retry (t)." in _pane_text(screen), what="suggestion with t")
        assert "install the tool, then t retry" in _pane_text(screen) and "(r)" not in _pane_text(screen)
        footer = {k.action: k.key for k in screen.query(FooterKey)}
        assert footer["retry"] == "t" and footer["help"] == "f1", footer
        await pilot.press("w")  # pause updates: the toast and the header name w, not p
        await wait_for(pilot, lambda: any("w resumes" in t for t in _toasts(app)), what="pause toast")
        assert "updates paused (w)" in str(screen.query_one("#engine-header").render())
        await pilot.press("w")
        await pilot.press("T")
        await wait_for(pilot, lambda: isinstance(app.screen, TimeViewScreen), what="the time view on T")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, what="back")
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help on f1")
        entries = {e.binding_id: e for e in app.screen.entries}
        assert entries["verb.retry"].key == "t" and entries["main.time_view"].key == "T"
        assert any("t / R act" in e.description for e in app.screen.entries)  # the legend
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, what="help closed")
        await pilot.press("t")  # retry, on its new key
        await wait_for(
            pilot,
            lambda: ws.store.read_one("SELECT status FROM items WHERE id=?", (EP[8],))["status"] != "failed",
            what="the retry on t",
        )


def test_keymap_mistakes_are_clear_errors():
    cases = {
        "verb.retyr": ("no binding has this id", "Did you mean 'verb.retry'?", "app.quit, audit.back"),
        "verb.retry": (
            "t is also main.time_view (Trends) on the main screen",
            "Give one of them another key",
        ),
    }
    for binding_id, says in cases.items():
        with pytest.raises(ConfigError) as caught:
            keys.check_keymap({binding_id: "t"}, "ws/ewg.toml")
        for words in says:
            assert words in str(caught.value)
    with pytest.raises(ConfigError, match="'retry' is not a key name"):
        keys.check_keymap({"verb.retry": "ctrl+retry"})
    with pytest.raises(ConfigError, match="j is also table.down"):
        keys.check_keymap({"app.quit": "j"})  # the main screen's tables take j first: a clash
    with pytest.raises(ConfigError, match="is also Textual's"):
        keys.check_keymap({"verb.retry": "ctrl+p"})  # the command palette's own key
    assert keys.check_keymap({"verb.retry": "x", "verb.stop": "r"}) == {"verb.retry": "x", "verb.stop": "r"}
    assert keys.check_keymap({"detail.back": "q", "main.help": "?"}) == {
        "detail.back": "q",
        "main.help": "question_mark",
    }  # keys a binding has by default overlap on purpose (q quits the main screen, closes the detail)


def test_the_keymap_is_read_from_ewg_toml_dotted_or_quoted():
    text = '[console.keymap]\nverb.retry = "t"\n"main.copy" = "ctrl+y, y"\n'
    parsed = configmod.parse(text)
    assert parsed.console.keymap == {"verb.retry": "t", "main.copy": "ctrl+y,y"}
    for bad, says in (
        ("verb.retry = 3", "a key is a non-empty string"),
        ('verb.retry = "t t"', "not a key list"),
    ):
        with pytest.raises(ConfigError, match=says):
            configmod.parse(f"[console.keymap]\n{bad}\n")


def test_the_console_refuses_a_bad_keymap_before_it_starts(tmp_path):
    ws, _clock = seeded_workspace(tmp_path / "ws", count=2)
    try:
        ws.config.console.keymap = {"verb.nothing": "t"}
        with pytest.raises(ConfigError, match=r"ewg\.toml: \[console\.keymap\] 'verb\.nothing'"):
            EwgApp(ws)
    finally:
        ws.close()


def test_suggestions_get_the_verbs_active_key_and_old_key_letters_go():
    active = keys.ActiveKeys({"verb.retry": "t", "verb.reprocess": "ctrl+r"})
    assert active.with_keys(errors.SUGGESTIONS[errors.PERSISTENT]) == (
        "The input is bad: fix or replace the source file, then force reprocess (ctrl+r), or skip the stage (s)."
    )
    # an older database stored the key letters: they are replaced by the active ones
    assert active.with_keys("Check the network, then retry (r).") == "Check the network, then retry (t)."
    # the noun is not a verb: "before the retry" gets no key
    assert active.with_keys(errors.SUGGESTIONS[errors.CACHE_RELATED]).startswith(
        "The item's cache was cleared before the retry; if it fails again clear the cache (c)"
    )
    assert keys.without_keys("then retry (r).") == "then retry."


def _string_literals(path: Path) -> list[tuple[int, str]]:
    with path.open("rb") as source:
        return [
            (tok.start[0], tok.string)
            for tok in tokenize.tokenize(source.readline)
            if tok.type == tokenize.STRING or tok.type == getattr(tokenize, "FSTRING_MIDDLE", -1)
        ]


def test_no_text_in_the_engine_or_the_console_names_a_hard_coded_key():
    """Keys are the operator's: the engine's suggestions name verbs, the console's texts use `{key:ID}`
    or ActiveKeys.label(ID). A key letter in brackets ("retry (r)") or "press x" is a hard-coded key."""
    hard_coded = re.compile(r"\s\((?:[A-Za-z]|ctrl\+[a-z])\)|\bpress [a-zA-Z?/]\b|\bthen [a-zA-Z] to\b")
    allowed = {ROOT / "ewg_tui" / "keys.py"}  # the pattern that takes old key letters out
    found = []
    for folder in ("engine", "ewg_tui"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path in allowed:
                continue
            for line, literal in _string_literals(path):
                if not literal.startswith(('"""', "'''")) and hard_coded.search(literal):
                    found.append(f"{path.relative_to(ROOT)}:{line}: {literal[:80]}")
    assert found == []


async def test_the_theme_comes_from_ewg_toml_and_the_flag_overrides_it(seeded):
    ws, clock = seeded
    ws.config.console.theme = "nord"
    assert make_app(ws, clock).theme == "nord"
    assert make_app(ws, clock, theme="gruvbox").theme == "gruvbox"
    assert EwgApp(ws).theme_choice.source == "ewg.toml"
    ws.config.console.theme = "no-such-theme"
    with pytest.raises(ConfigError, match=r"\[console\] theme: 'no-such-theme' is not a theme") as caught:
        make_app(ws, clock)
    assert "textual-dark" in str(caught.value) and "nord" in str(caught.value)
    with pytest.raises(ConfigError, match="--theme: 'nope' is not a theme"):
        make_app(ws, clock, theme="nope")


async def test_a_theme_picked_in_the_console_is_remembered_owner_only(seeded):
    ws, clock = seeded
    ws.config.console.theme = "nord"
    app = make_app(ws, clock, remember_theme=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        app.theme = "gruvbox"  # what the command palette's theme picker does
        path = themes.state_path(ws.root)
        await wait_for(pilot, lambda: path.exists(), what="the pick saved")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = make_app(ws, clock)
    assert again.theme == "gruvbox" and again.theme_choice.source == "picked"
    assert make_app(ws, clock, theme="nord").theme == "nord"  # the flag still wins
    ws.config.console.theme = "dracula"  # ewg.toml changed after the pick: the newer decision wins
    assert make_app(ws, clock).theme == "dracula"
    path.write_text('{"theme": "gone-in-a-newer-textual", "configured": "dracula"}')
    assert make_app(ws, clock).theme == "dracula"  # a pick Textual no longer has is ignored


async def test_tests_and_embedders_do_not_write_a_pick_unless_asked(seeded):
    ws, clock = seeded
    app = make_app(ws, clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        app.theme = "gruvbox"
        await pilot.pause(0.2)
    assert not themes.state_path(ws.root).exists()


def test_ewg_theme_flag_and_bad_console_settings_exit_2_with_the_fix(tmp_path, monkeypatch, capsys):
    ws, _clock = seeded_workspace(tmp_path / "ws", count=1)
    ws.close()
    monkeypatch.setattr(cli, "_need_terminal", lambda: None)  # the check that fails first without a tty
    assert cli.main(["-w", str(tmp_path / "ws"), "--attach", "--theme", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "--theme: 'bogus' is not a theme" in err and "textual-light" in err and "Traceback" not in err
    toml = tmp_path / "ws" / "ewg.toml"
    text = toml.read_text()
    assert "\n[console.keymap]" in text  # the section `ewg init` writes, with its comment
    toml.write_text(text.replace("\n[console.keymap]", '\n[console.keymap]\nverb.retry = "j"\n', 1))
    assert cli.main(["-w", str(tmp_path / "ws"), "--attach"]) == 2
    assert "'verb.retry' = 'j': j is also table.down" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["demo", "--theme", "nord"])
    assert args.theme == "nord"
    assert cli.build_parser().parse_args(["--theme", "nord", "demo"]).theme == "nord"
    assert cli.build_parser().parse_args([]).theme is None


def test_the_default_config_documents_the_console_section():
    from engine.workspace import DEFAULT_TOML

    assert "[console]" in DEFAULT_TOML and "[console.keymap]" in DEFAULT_TOML
    assert configmod.parse(DEFAULT_TOML).console == configmod.Console()


def test_help_text_for_themes_in_a_printed_form():  # the flag's help is what `ewg --help` prints
    out = io.StringIO()
    cli.build_parser().print_help(out)
    assert "--theme NAME" in out.getvalue()


async def test_intervene_choices_and_the_stuck_toast_name_the_active_keys(seeded):
    ws, clock = seeded
    ws.config.console.keymap = {"verb.extend": "w", "main.intervene": "I", "main.filter": "f5"}
    app = make_app(ws, clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await wait_for(pilot, lambda: any("Stuck work" == n.title for n in app._notifications), what="toast")
        stuck = next(n.message for n in app._notifications if n.title == "Stuck work")
        assert "Filter with f5 stuck, then I to intervene." in stuck
        await move_to(pilot, screen.episodes, EP[4])  # STALLED
        await pilot.press("I")
        await wait_for(pilot, lambda: hasattr(app.screen, "choices"), what="the intervene choices")
        labels = [label for _value, label in app.screen.choices]
        assert "Wait longer: extend its timeout (w)" in labels
        assert (
            "Skip the stage (s, asks first)" in labels
            and "Open the log and attempt history (enter)" in labels
        )


async def test_read_only_shows_the_suggestion_without_keys(seeded):
    ws, clock = seeded
    with ws.store.write() as conn:  # a suggestion an older ewg stored, key letters in it
        conn.execute("UPDATE items SET error_suggestion=? WHERE id=?", ("Check it, then retry (r).", EP[8]))
    app = make_app(ws, clock, readonly=True)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        await move_to(pilot, screen.episodes, EP[8])
        await wait_for(pilot, lambda: "Check it, then retry." in _pane_text(screen), what="the suggestion")
        assert "(r)" not in _pane_text(screen) and "keys:" not in _pane_text(screen)
