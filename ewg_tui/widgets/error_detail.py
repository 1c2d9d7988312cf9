"""The selected item's error: class, message, when, attempt history, log tail and the key that fixes it."""

from __future__ import annotations

from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from engine import errors
from engine.text import inert, one_line

from ..keys import DEFAULT_KEYS, ActiveKeys, keys_of, without_keys
from . import formatting as fmt

LOG_LINES = 6

# What the operator can press, by situation. The engine's suggestion says why; this says which key
# (the active one: `{key:ID}` is filled from the keymap, ewg_tui/keys.py).
RECOVERY_KEYS = {
    errors.TRANSIENT: "{key:verb.retry} retry now",
    errors.CACHE_RELATED: "{key:verb.clear_cache} clear cache · {key:verb.reprocess} force reprocess",
    errors.RESOURCE: "free the resource; the engine resumes by itself",
    errors.PERSISTENT: "{key:verb.reprocess} force reprocess · {key:verb.skip} skip stage",
    errors.CONFIG_ERROR: "fix ewg.toml, then {key:verb.retry} retry",
    errors.MISSING_DEPENDENCY: "install the tool, then {key:verb.retry} retry",
}
STUCK_KEYS = (
    "{key:main.intervene} intervene · {key:verb.extend} extend (wait longer) · "
    "{key:verb.force_stop} force stop · {key:verb.skip} skip stage"
)
STOPPED_KEYS = "{key:verb.resume} resume · {key:verb.retry} retry"
BLOCKED_KEYS = "waits by itself for the service or resource; {key:verb.retry} retry to try now"


def recovery_hint(item: dict, keys: ActiveKeys = DEFAULT_KEYS) -> str:
    if item["status"] == "running" and item.get("verdict") in ("STALLED", "TIMED OUT", "SLOW"):
        return keys.fill(STUCK_KEYS)
    if item["status"] == "stopped":
        return keys.fill(STOPPED_KEYS)
    if item["status"] == "blocked":
        return keys.fill(BLOCKED_KEYS)
    return keys.fill(RECOVERY_KEYS.get(item.get("error_class") or "", ""))


def log_tail(attempts: list[dict], lines: int = LOG_LINES) -> list[str]:
    for attempt in reversed(attempts):
        text = attempt.get("log_tail") or attempt.get("error_detail") or ""
        if text.strip():
            return [one_line(line) for line in text.rstrip().splitlines()[-lines:]]
    return []


def describe(
    item: dict | None,
    attempts: list[dict],
    now: float,
    max_attempts: int,
    width: int = 80,
    readonly: bool = False,
    looks=None,
    keys: ActiveKeys = DEFAULT_KEYS,
) -> Content:
    """`looks(key)` gives a status's or verdict's fmt.Look (the app's PALETTE column); `keys` the
    active keys, named in the hint line and added to the engine's suggestion after each verb."""
    looks = looks or (lambda key: fmt.PALETTE["dark"].get(key, fmt.Look()))
    if item is None:
        return Content.assemble(
            ("Select an item to see its errors and how to recover it.", "$foreground-muted")
        )
    lines: list[Content] = []
    head = [
        (one_line(item["id"]), "bold"),
        "  ",
        (fmt.status_text(item, now, max_attempts), looks(item["status"]).markup),
    ]
    if item.get("verdict"):
        verdict = item["verdict"]
        head += ["  ", (f"{fmt.glyph(verdict)} {verdict}", looks(verdict).markup)]
    lines.append(Content.assemble(*head))
    if item.get("error_class"):
        lines.append(
            Content.assemble(
                (one_line(item["error_class"]), looks("failed").markup),
                " at ",
                one_line(fmt.current_stage(item)),
                (
                    "  " + fmt.timestamp(item.get("error_at")) + ", " + fmt.ago(item.get("error_at"), now)
                    if item.get("error_at")
                    else "",
                    "$foreground-muted",
                ),
            )
        )
        lines.append(Content(inert(item.get("error_message"))))
    elif item["status"] == "running":
        message = item.get("progress_message") or "working"
        lines.append(
            Content.assemble(
                one_line(f"{fmt.current_stage(item)}: {message}"),
                (f"  for {fmt.elapsed(item, now)}", "$foreground-muted"),
            )
        )
    elif item.get("blocked_reason"):
        lines.append(Content(inert(item["blocked_reason"])))
    hint = "" if readonly else recovery_hint(item, keys)
    if item.get("error_suggestion"):
        suggestion = (
            without_keys(item["error_suggestion"]) if readonly else keys.with_keys(item["error_suggestion"])
        )
        lines.append(Content.assemble(("→ ", "bold $accent"), inert(suggestion)))
    if hint:
        lines.append(Content.assemble(("keys: ", "bold $accent"), (hint, "$accent")))
    if attempts:
        lines.append(Content.assemble(("attempts", "bold")))
        for a in attempts:
            outcome = a.get("outcome") or "running"
            variable = (
                "$success" if outcome == "succeeded" else "$accent" if outcome == "running" else "$error"
            )
            head = f"#{a['number']} {one_line(a['stage']):<11} "
            took = f" {fmt.duration(a.get('duration')):>5}"
            error_class = f" {one_line(a.get('error_class'))}"
            when = f" {fmt.timestamp(a.get('started_at'))}"
            if len(head) + 9 + len(took) + len(when) + len(error_class) > width:
                when = ""  # the start time only where the whole line fits: never a wrapped attempt
            lines.append(
                Content.assemble(
                    head,
                    (f"{outcome:<9}", variable),
                    took,
                    (when, "$foreground-muted"),
                    (error_class, "$error"),
                )
            )
    tail = log_tail(attempts)
    if tail:
        lines.append(Content.assemble(("log tail", "bold")))
        lines += [Content.assemble(("  " + line, "$foreground-muted")) for line in tail]
    return Content("\n").join(lines)


class ErrorDetail(VerticalScroll):
    """A focusable pane (tab reaches it) that scrolls when the history is long."""

    DEFAULT_CSS = """
    ErrorDetail {
        height: 1fr;
        padding: 0 1;
        scrollbar-size-vertical: 1;
    }
    ErrorDetail:focus {
        background-tint: $foreground 3%;
    }
    ErrorDetail > Static {
        width: 1fr;
    }
    """
    can_focus = True

    def compose(self):
        yield Static(describe(None, [], 0, 0), id="error-text")

    _shown: Content | None = None

    def show(
        self, item: dict | None, attempts: list[dict], now: float, max_attempts: int, readonly: bool = False
    ) -> None:
        content = describe(
            item,
            attempts,
            now,
            max_attempts,
            self.scrollable_content_region.width,
            readonly,
            looks=lambda key: fmt.look(self.app, key),
            keys=keys_of(self),
        )
        if content != self._shown:  # an unchanged pane is not repainted (idle SSH sessions stay quiet)
            self._shown = content
            self.query_one("#error-text", Static).update(content)
