"""Messages between threads and widgets: small dataclasses, posted with `post_message` (thread-safe)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from engine.db.queries import ItemFilter, Overview
from engine.runtime import EngineEvent
from engine.verbs import Preview


@dataclass
class ViewData:
    """Everything the main screen shows, read in one go by the poll worker."""

    generation: int
    now: float
    episodes: list[dict]
    episode_offset: int
    episode_total: int
    clips: list[dict]
    clip_offset: int
    clip_total: int
    detail_id: str | None  # the item whose detail was asked for
    detail: dict | None
    detail_attempts: list[dict]
    overview: Overview | None = None
    counts: dict | None = None
    follow_ups: dict[str, str] = field(default_factory=dict)  # item id -> succeeded | failed_again
    episode_id: str | None = None  # the episode whose clips were read (None: all clips)
    counting: bool = False  # the episode rows came before their count: episode_total is a lower bound
    episode_filter: ItemFilter | None = None  # what the episode rows were read for
    episode_order: tuple[str, bool] = ("id", False)  # ... and in which order (sort, descending)


class ViewRead(Message):
    """A fresh read of the visible window; a newer one replaces an older one still in the queue.

    A partial one (the rows of a free-text filter before their count) comes first: a whole read
    behind it in the queue supersedes it, and it supersedes nothing."""

    def __init__(self, data: ViewData | None, partial: bool = False) -> None:
        super().__init__()
        self.data = data  # None: the read was interrupted because the view changed
        self.partial = partial

    def can_replace(self, message: Message) -> bool:
        # Textual asks the queued message whether `message`, the newer one behind it, may take its place.
        return isinstance(message, ViewRead) and not message.partial


class EngineNotice(Message, bubble=False):
    """An event from the in-process engine's threads, posted to the app.

    It must not bubble: the app hands it on to the main screen as a new notice, and one bubbling
    back up from there would be handed on again, for ever (a busy loop that starves every thread).
    """

    def __init__(self, event: EngineEvent) -> None:
        super().__init__()
        self.event = event


class VerbPreviewed(Message):
    """The engine's dry run of a verb, ready to be confirmed."""

    def __init__(self, request: Any, preview: Preview) -> None:
        super().__init__()
        self.request = request
        self.preview = preview


class VerbApplied(Message):
    def __init__(self, request: Any, preview: Preview) -> None:
        super().__init__()
        self.request = request
        self.preview = preview


class VerbRefused(Message):
    """The engine said no (VerbError) or something broke; `text` is a sentence for the operator."""

    def __init__(self, request: Any, text: str) -> None:
        super().__init__()
        self.request = request
        self.text = text


class DetailRead(Message):
    """The item detail screen's data."""

    def __init__(
        self,
        item: dict | None,
        attempts: list[dict],
        checkpoints: list[dict],
        clips: list[dict],
        events: list[dict],
    ) -> None:
        super().__init__()
        self.item = item
        self.attempts = attempts
        self.checkpoints = checkpoints
        self.clips = clips
        self.events = events
