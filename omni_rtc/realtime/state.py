"""Client-side view of a realtime conversation, driven purely by the events seen.

No I/O: the client feeds every event it sends and receives into
:class:`ConversationState`, and asks it questions (is a response active? may an image
be sent now?) or for the events a barge-in needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import events as ev
from .profiles import BargeInStrategy


@dataclass
class ConversationState:
    session_ready: bool = False
    session: dict[str, Any] = field(default_factory=dict)
    active_response_id: str | None = None
    """Set from ``response.created`` until ``response.done`` (or our own cancel)."""
    audio_in_buffer: bool = False
    """Audio was appended since the buffer was last committed or cleared."""
    user_speaking: bool = False
    assistant_item_id: str | None = None
    """The assistant item whose audio is arriving; needed for OpenAI's truncate."""
    cancel_requested: bool = False

    @property
    def response_active(self) -> bool:
        return self.active_response_id is not None

    @property
    def can_append_image(self) -> bool:
        return self.session_ready and self.audio_in_buffer

    def sent(self, event: ev.Event) -> None:
        if isinstance(event, ev.InputAudioBufferAppend) and event.audio:
            self.audio_in_buffer = True
        elif isinstance(event, (ev.InputAudioBufferCommit, ev.InputAudioBufferClear)):
            self.audio_in_buffer = False
        elif isinstance(event, ev.ResponseCancel):
            # Some models never send response.done after a cancel: don't wait on it.
            self.cancel_requested = True
            self.active_response_id = None

    def received(self, event: ev.Event) -> None:
        if isinstance(event, ev.SessionUpdated):
            self.session_ready = True
            self.session = dict(event.session)
        elif isinstance(event, ev.SessionCreated) and not self.session:
            self.session = dict(event.session)
        elif isinstance(event, ev.SpeechStarted):
            self.user_speaking = True
        elif isinstance(event, ev.SpeechStopped):
            self.user_speaking = False
        elif isinstance(event, (ev.InputAudioBufferCommitted, ev.InputAudioBufferCleared)):
            self.audio_in_buffer = False
        elif isinstance(event, ev.ResponseCreated):
            self.active_response_id = event.response_id or "resp"
            self.cancel_requested = False
            self.assistant_item_id = None
        elif isinstance(event, ev.OutputItemAdded):
            item_id = event.item.get("id")
            if isinstance(item_id, str):
                self.assistant_item_id = item_id
        elif isinstance(event, ev.AudioDelta) and event.item_id:
            self.assistant_item_id = event.item_id
        elif isinstance(event, ev.ResponseDone) and event.response_id in (
            "",
            self.active_response_id,
        ):
            self.active_response_id = None

    def barge_in_events(
        self, strategy: BargeInStrategy, played_ms: int | None
    ) -> list[ev.ClientEvent]:
        """Client events that stop the current reply upstream, per the provider's strategy.

        ``played_ms`` is how much of the current assistant item the user actually heard.
        """
        out: list[ev.ClientEvent] = []
        if strategy.cancel_response and self.response_active:
            out.append(ev.ResponseCancel())
        if strategy.truncate_item and self.assistant_item_id and played_ms is not None:
            out.append(
                ev.ConversationItemTruncate(
                    item_id=self.assistant_item_id, content_index=0, audio_end_ms=max(0, played_ms)
                )
            )
        return out
