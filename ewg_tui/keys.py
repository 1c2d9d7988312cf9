"""Keys by binding id (posting's way): `[console.keymap]` in ewg.toml, checked, and the active key of
every binding, so that no hint names a key the operator has moved.

Every binding of the console has an id (`verb.retry`, `main.copy`, `detail.pager` ...). A keymap maps
ids to keys; Textual applies it (`App.set_keymap`) to the footer and the key handling, and everything
else that names a key asks `ActiveKeys.label(id)`: the help screen, the first-run hint, the legend,
toasts, choice labels and the engine's suggestions, which name verbs in words (engine.errors.
SUGGESTED_VERBS) and get the verb's active key added here.

`check_keymap` refuses, with the fix in the message: an id no binding has (listing the ids, and the
nearest one), a key Textual has no name for, and a key clash, i.e. a remapped key that another binding
active at the same time already answers to (defaults that overlap on purpose, such as `q` that quits
the main screen and closes the item detail, are not clashes: the inner screen's binding wins there).
"""

from __future__ import annotations

import difflib
import functools
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from textual.keys import Keys, _normalize_key_list, format_key

from engine.config import ConfigError
from engine.errors import verb_mentions

# Shown as these in hints (Textual's own display names are arrows and symbols such as ⏎).
_SHOWN = {
    "escape": "esc",
    "enter": "enter",
    "space": "space",
    "tab": "tab",
    "pageup": "pgup",
    "pagedown": "pgdn",
}
_MODIFIERS = ("ctrl", "shift", "alt", "meta", "super", "hyper")
_KEY_NAMES = frozenset(k.value for k in Keys) | {"space", "tab", "enter", "escape", "backspace"}
# A key letter written after a verb by ewg before keys were the operator's ("retry (r)"), in suggestions
# stored in older databases: taken out, the active key is added instead.
_LEGACY_KEY = re.compile(r"\s\((?:[A-Za-z]|ctrl\+[a-z])\)(?=[\s.,;:]|$)")
# In the console's own texts a key is written as its binding id, `{key:main.live}`, filled in when shown.
_PLACEHOLDER = re.compile(r"\{key:([\w.]+)\}")


def key_label(keys: str) -> str:
    """How a hint shows a binding's key: its first key, `?` not question_mark, `esc`, `ctrl+d`."""
    first = keys.split(",")[0].strip()
    *modifiers, name = first.split("+") if "+" in first.strip("+") else ("", first)
    shown = _SHOWN.get(name) or format_key(name)
    return "+".join([m for m in modifiers if m] + [shown])


def key_labels(keys: str) -> str:
    """Every key of a binding, `/`-separated (`g / home`)."""
    return " / ".join(key_label(k) for k in keys.split(",") if k.strip())


@dataclass(frozen=True)
class Scope:
    """Bindings that answer keys at the same time (one screen, its focused widgets and the app)."""

    name: str
    classes: tuple[type, ...]


@functools.cache
def scopes() -> tuple[Scope, ...]:
    from textual.containers import VerticalScroll

    from .app import EwgApp
    from .screens.audit_log import AuditLogScreen
    from .screens.choice import ChoiceScreen
    from .screens.confirm_verb import ConfirmVerbScreen
    from .screens.failure_groups import FailureGroupsScreen
    from .screens.help import HelpScreen
    from .screens.item_detail import ItemDetailScreen
    from .screens.main import MainScreen
    from .screens.quit_dialog import QuitScreen
    from .screens.time_view import TimeViewScreen
    from .widgets.error_detail import ErrorDetail
    from .widgets.filter_bar import FilterBar
    from .widgets.item_table import ItemTable

    return (
        Scope("the main screen", (EwgApp, MainScreen, ItemTable, ErrorDetail)),
        Scope("the filter bar", (EwgApp, FilterBar)),
        Scope("the item detail", (EwgApp, ItemDetailScreen, VerticalScroll)),
        Scope("the help screen", (EwgApp, HelpScreen, VerticalScroll)),
        Scope("the audit log", (EwgApp, AuditLogScreen)),
        Scope("the time view", (EwgApp, TimeViewScreen)),
        Scope("the failure groups", (EwgApp, FailureGroupsScreen)),
        Scope("a choice", (EwgApp, ChoiceScreen)),
        Scope("a confirmation", (EwgApp, ConfirmVerbScreen)),
        Scope("the quit dialog", (EwgApp, QuitScreen)),
    )


@dataclass(frozen=True)
class Bound:
    """One binding as a person knows it: its id (None for Textual's own), every key, what it does."""

    id: str | None
    keys: str  # Textual's names, comma-separated
    description: str


def _scope_bindings(scope: Scope) -> list[Bound]:
    """Every binding active in the scope. Textual splits `Binding("escape,q", ...)` into one binding per
    key: an id's keys are taken whole from the BINDINGS that declares it, in the order written there."""
    from textual.binding import Binding

    declared: dict[str, str] = {}
    for cls in scope.classes:
        for base in cls.__mro__:
            for b in base.__dict__.get("BINDINGS", []):
                if isinstance(b, Binding) and b.id and b.id not in declared:
                    declared[b.id] = _normalize_key_list(b.key)
    by_name: dict[str, tuple[str | None, list[str], str]] = {"ctrl+p": (None, ["ctrl+p"], "Command palette")}
    for cls in scope.classes:
        for key, bindings in cls._merge_bindings().key_to_bindings.items():  # with the inherited ones
            for b in bindings:
                name = b.id or f"{cls.__name__}:{b.action}"
                entry = by_name.setdefault(name, (b.id, [], b.description or b.action))
                if key not in entry[1]:
                    entry[1].append(key)
    return [
        Bound(binding_id, declared.get(binding_id or "") or ",".join(keys), what)
        for binding_id, keys, what in by_name.values()
    ]


@functools.cache
def defaults() -> dict[str, Bound]:
    """Every binding that has an id, by id, with its default keys."""
    by_id: dict[str, Bound] = {}
    for scope in scopes():
        for bound in _scope_bindings(scope):
            if bound.id and bound.id not in by_id:
                by_id[bound.id] = bound
    return by_id


def binding_ids() -> list[str]:
    return sorted(defaults())


def _key_problem(key: str) -> str:
    """Why Textual would never deliver `key` (a normalized key), or ""."""
    *modifiers, name = key.split("+") if len(key) > 1 else ("", key)
    unknown = [m for m in modifiers if m and m not in _MODIFIERS]
    if unknown:
        return f"{unknown[0]!r} is not a modifier (use ctrl, shift, alt or meta)"
    if len(name) == 1 or name in _KEY_NAMES:
        return ""
    try:
        unicodedata.lookup(name.replace("_", " ").upper())  # question_mark, full_stop, ...
        return ""
    except KeyError:
        return (
            f"{name!r} is not a key name (use a letter, a digit, a symbol, or a name such as f5, enter, "
            "escape, space, tab, up, pageup, home, delete)"
        )


def check_keymap(keymap: dict[str, str], where: Path | str = "ewg.toml") -> dict[str, str]:
    """The keymap with Textual's key names (`?` becomes question_mark), or a ConfigError that names the
    binding id, what is wrong and the fix."""
    known = defaults()
    normal: dict[str, str] = {}
    for binding_id, keys in keymap.items():
        if binding_id not in known:
            near = difflib.get_close_matches(binding_id, known, n=1)
            maybe = f" Did you mean {near[0]!r}?" if near else ""
            raise ConfigError(
                f"{where}: [console.keymap] {binding_id!r}: no binding has this id.{maybe} The binding ids "
                f"are: {', '.join(binding_ids())}. Fix the file and start again; nothing was changed."
            )
        normal[binding_id] = _normalize_key_list(keys)
        for key in normal[binding_id].split(","):
            problem = _key_problem(key)
            if problem:
                raise ConfigError(
                    f"{where}: [console.keymap] {binding_id!r} = {keys!r}: {problem}. "
                    "Fix the file and start again; nothing was changed."
                )
    for scope in scopes():
        _check_clashes(scope, normal, keymap, where)
    return normal


def _name(bound: Bound) -> str:
    return f"{bound.id} ({bound.description})" if bound.id else f"Textual's {bound.description}"


def _check_clashes(scope: Scope, normal: dict[str, str], written: dict[str, str], where) -> None:
    answers: dict[str, list[Bound]] = {}
    for bound in _scope_bindings(scope):
        keys = normal.get(bound.id or "") or bound.keys
        for key in dict.fromkeys(k.strip() for k in keys.split(",")):
            answers.setdefault(key, []).append(bound)
    for key, bindings in answers.items():
        # A key a binding had by default overlaps other defaults on purpose (the inner screen's wins).
        moved = [b for b in bindings if b.id in normal and key not in b.keys.split(",")]
        if len(bindings) > 1 and moved:
            mover = moved[0]
            other = next(b for b in bindings if b is not mover)
            raise ConfigError(
                f"{where}: [console.keymap] {mover.id!r} = {written[mover.id]!r}: {key_label(key)} is also "
                f"{_name(other)} on {scope.name}. Give one of them another key; nothing was changed."
            )


def without_keys(suggestion: str) -> str:
    """A suggestion without the key letters an older ewg stored in it (for read-only and outside the
    console, where no key does anything)."""
    return _LEGACY_KEY.sub("", suggestion or "")


class ActiveKeys:
    """The key each binding answers to now: the keymap's, else the binding's own."""

    def __init__(self, keymap: dict[str, str] | None = None) -> None:
        self.keymap = dict(keymap or {})

    def keys(self, binding_id: str) -> str:
        if binding_id in self.keymap:
            return self.keymap[binding_id]
        bound = defaults().get(binding_id)
        if bound is None:
            raise KeyError(f"no binding has the id {binding_id!r}")
        return bound.keys

    def label(self, binding_id: str) -> str:
        """The key a hint names for this binding, e.g. `r`, `?`, `esc`, `ctrl+d`."""
        return key_label(self.keys(binding_id))

    def labels(self, binding_id: str) -> str:
        return key_labels(self.keys(binding_id))

    def fill(self, text: str) -> str:
        """`{key:ID}` in a console text becomes the binding's active key: "{key:main.live} resumes"."""
        return _PLACEHOLDER.sub(lambda m: self.label(m.group(1)), text)

    def with_keys(self, suggestion: str) -> str:
        """An engine suggestion with the active key after each verb it names: "then retry" reads
        "then retry (r)", or "(t)" when the keymap moved retry to t."""
        text = without_keys(suggestion)
        out, last = [], 0
        for end, verb in verb_mentions(text):
            binding_id = f"verb.{verb}"
            if binding_id in defaults():
                out += [text[last:end], f" ({self.label(binding_id)})"]
                last = end
        return "".join(out) + text[last:]


DEFAULT_KEYS = ActiveKeys()


def keys_of(node) -> ActiveKeys:
    """The app's active keys (a widget tested in a plain App gets the defaults)."""
    try:
        app = node.app
    except Exception:  # a node outside any running app (a unit test): the defaults
        return DEFAULT_KEYS
    return getattr(app, "keys", None) or DEFAULT_KEYS
