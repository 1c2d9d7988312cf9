"""The `/` filter: `status:failed,retrying stage:enriched show:tech stuck free text`."""

from __future__ import annotations

import shlex
from dataclasses import replace

from textual.binding import Binding
from textual.content import Content
from textual.message import Message
from textual.suggester import Suggester
from textual.widgets import Input

from engine import pipeline
from engine.db.queries import DISCARDED, STATUSES, ItemFilter
from engine.text import one_line

from ..keys import keys_of
from . import formatting as fmt

# `{key:filter.leave}`: the active key (ewg_tui/keys.py); enter is the input's own.
HELP = "status:failed,retrying  stage:enriched  show:tech  stuck  free text   (enter keeps it, {key:filter.leave} clears)"
KEYS_HINT = "enter keeps · {key:filter.leave} clears"


FIELDS = ("status:", "stage:", "show:", "stuck")
SHOWN_CANDIDATES = 6


def _quoted(name: str) -> str:
    return f'"{name}"' if any(c.isspace() for c in name) else name


def candidates(token: str, kind: str, shows: tuple[str, ...]) -> list[str]:
    """Whole-token completions of the word being typed: a field name, or a value of the field."""
    key, sep, rest = token.partition(":")
    if not sep:
        low = token.lower()
        return [f for f in FIELDS if f.startswith(low) and f != low] if token else []
    key = key.lower()
    if key in ("status", "s"):
        done, _, last = rest.rpartition(",")
        prefix = f"{token[: len(token) - len(last)]}"
        chosen = set(done.lower().split(","))
        return [prefix + v for v in STATUSES if v.startswith(last.lower()) and v != last and v not in chosen]
    if key in ("stage", "st"):
        values: tuple[str, ...] = pipeline.stages_of(kind)
    elif key == "show":
        values = tuple(_quoted(one_line(name)) for name in shows)  # offered as the bar would keep them
    else:
        return []
    low = rest.lower().lstrip('"')
    head = token[: len(token) - len(rest)]
    return [f"{head}{v}" for v in values if v.lower().lstrip('"').startswith(low) and v != rest]


def complete(value: str, kind: str, shows: tuple[str, ...]) -> str | None:
    """The whole text with the word being typed completed by its first candidate (typed case kept)."""
    if not value or value[-1].isspace():
        return None
    head = value[: len(value) - len(value.split()[-1])]
    token = value[len(head) :]
    for option in candidates(token, kind, shows):
        if option.startswith(token):  # inline, it can only add to what was typed
            return head + option
    return None


class FilterSuggester(Suggester):
    """Inline completion of fields and values (right arrow or tab takes it); show names come from the
    workspace, read on a worker thread when the bar opens."""

    def __init__(self, kind: str = pipeline.EPISODE) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.kind = kind
        self.shows: tuple[str, ...] = ()

    async def get_suggestion(self, value: str) -> str | None:
        return complete(value, self.kind, self.shows)


class FilterError(ValueError):
    """The filter text does not parse; the message says which word and why."""


def parse_filter(text: str, kind: str = pipeline.EPISODE) -> ItemFilter:
    """Turn what the operator typed into an ItemFilter; FilterError says what is wrong."""
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    flt = ItemFilter(kind=kind)
    free: list[str] = []
    for word in words:
        key, sep, value = word.partition(":")
        key = key.lower()
        if sep and key in ("status", "s"):
            statuses = tuple(v for v in value.lower().split(",") if v)
            known = (*STATUSES, DISCARDED)
            unknown = [v for v in statuses if v not in known]
            if unknown:
                raise FilterError(f"unknown status {unknown[0]!r}; statuses: {', '.join(known)}")
            flt = replace(flt, statuses=statuses)
        elif sep and key in ("stage", "st"):
            if value not in pipeline.stages_of(kind):
                raise FilterError(
                    f"unknown stage {value!r}; {kind} stages: {', '.join(pipeline.stages_of(kind))}"
                )
            flt = replace(flt, stage=value)
        elif sep and key == "show":
            flt = replace(flt, show=value)
        elif word.lower() == "stuck":
            flt = replace(flt, stuck_only=True)
        else:
            free.append(word)
    return replace(flt, text=" ".join(free))


class FilterBar(Input):
    DEFAULT_CSS = """
    FilterBar {
        overlay: screen;      /* over the panes, not beside them: opening it must not resize the tables */
        position: absolute;
        offset-y: 1;
        width: 100%;
        display: none;
        border: tall $accent;
        height: 3;
    }
    FilterBar.-active {
        display: block;
    }
    FilterBar.-invalid {
        border: tall $error;
    }
    """
    # Not in the footer: the bar says it (KEYS_HINT), and the footer keeps the same keys while the bar
    # has focus, so opening and closing the bar costs no footer rebuild (20-40 ms of each of those keys).
    BINDINGS = [Binding("escape", "leave", "Clear filter", id="filter.leave", show=False)]

    class FilterChanged(Message):
        """The filter to apply (None: the text does not parse; the bar says why)."""

        def __init__(self, flt: ItemFilter | None, text: str, error: str = "") -> None:
            super().__init__()
            self.flt = flt
            self.text = text
            self.error = error

    class FilterLeft(Message):
        """The bar closed; `keep` says whether the filter stays applied."""

        def __init__(self, keep: bool) -> None:
            super().__init__()
            self.keep = keep

    def __init__(self, *, id: str | None = None) -> None:
        self.suggestions = FilterSuggester()
        super().__init__(placeholder=HELP, id=id, suggester=self.suggestions)
        self.border_title = "filter episodes"
        self.keys_hint = KEYS_HINT

    def on_mount(self) -> None:
        self.cursor_blink = getattr(self.app, "cursor_blink", True)
        keys = keys_of(self)
        self.placeholder = keys.fill(HELP)
        self.keys_hint = keys.fill(KEYS_HINT)

    def open(self) -> None:
        if not self.has_class("-invalid"):
            self.border_subtitle = self.keys_hint
        self.add_class("-active")
        self.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if fmt.keep_inert(self, event.value):
            return  # the inert value comes back as its own Changed
        try:
            flt = parse_filter(event.value)
        except FilterError as exc:
            self.add_class("-invalid")
            self.border_subtitle = Content(one_line(exc))
            self.post_message(self.FilterChanged(None, event.value, str(exc)))
            return
        self.remove_class("-invalid")
        self.border_subtitle = Content(one_line(self._hint(event.value)))  # show names: never markup
        self.post_message(self.FilterChanged(flt, event.value))

    def _hint(self, value: str) -> str:
        """Several ways to go on from the word being typed: list them where the keys hint is."""
        words = value.split()
        token = words[-1] if words and not value[-1:].isspace() else ""
        options = candidates(token, self.suggestions.kind, self.suggestions.shows) if token else []
        if len(options) < 2:
            return self.keys_hint
        cut = (
            max(token.rfind(":"), token.rfind(",")) + 1
        )  # show what each option adds: the value, or the field
        shown = [o[cut:] for o in options[:SHOWN_CANDIDATES]]
        more = " …" if len(options) > SHOWN_CANDIDATES else ""
        return " · ".join(shown) + more + "   → takes the first"

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.has_class("-invalid"):
            return
        self.remove_class("-active")
        self.post_message(self.FilterLeft(keep=True))

    def action_leave(self) -> None:
        with self.prevent(Input.Changed):  # FilterLeft below reads the unfiltered view once, not twice
            self.value = ""
        self.remove_class("-active", "-invalid")
        self.post_message(self.FilterLeft(keep=False))
