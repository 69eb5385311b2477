"""Realtime protocol events as plain data (no I/O).

Every client and server event of the OpenAI-Realtime-style protocol that Qwen-Omni
speaks is a frozen dataclass; :mod:`.codec` turns them into JSON and back. Base64
fields (``audio``, ``image``, audio ``delta``) are ``bytes`` here, keys we do not model
are kept in ``extra``, and unknown event types become :class:`UnknownEvent` instead of
being dropped, so a newer server never breaks us.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "AudioDelta",
    "AudioDone",
    "AudioTranscriptDelta",
    "AudioTranscriptDone",
    "ClientEvent",
    "ContentPartAdded",
    "ContentPartDone",
    "ConversationItemCreated",
    "ConversationItemTruncate",
    "ConversationItemTruncated",
    "ErrorEvent",
    "Event",
    "InputAudioBufferAppend",
    "InputAudioBufferClear",
    "InputAudioBufferCleared",
    "InputAudioBufferCommit",
    "InputAudioBufferCommitted",
    "InputImageBufferAppend",
    "InputTranscriptionCompleted",
    "InputTranscriptionFailed",
    "OutputItemAdded",
    "OutputItemDone",
    "ProtocolError",
    "ResponseCancel",
    "ResponseCreate",
    "ResponseCreated",
    "ResponseDone",
    "ServerEvent",
    "SessionCreated",
    "SessionFinish",
    "SessionFinished",
    "SessionUpdate",
    "SessionUpdated",
    "SpeechStarted",
    "SpeechStopped",
    "TextDelta",
    "TextDone",
    "UnknownEvent",
]


class ProtocolError(ValueError):
    """A frame that is not a valid event (bad JSON, missing type, wrong field type)."""


B64 = {"b64": True}
"""Field metadata: bytes here, base64 text on the wire."""


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event; ``extra`` keeps JSON keys this library does not model."""

    TYPE: ClassVar[str] = ""
    event_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def type(self) -> str:
        return self.TYPE


@dataclass(frozen=True, kw_only=True)
class ClientEvent(Event):
    """An event the client sends."""


@dataclass(frozen=True, kw_only=True)
class ServerEvent(Event):
    """An event the server sends."""


# ---------------------------------------------------------------- client events


@dataclass(frozen=True, kw_only=True)
class SessionUpdate(ClientEvent):
    TYPE: ClassVar[str] = "session.update"
    session: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class InputAudioBufferAppend(ClientEvent):
    TYPE: ClassVar[str] = "input_audio_buffer.append"
    audio: bytes = field(default=b"", metadata=B64)


@dataclass(frozen=True, kw_only=True)
class InputAudioBufferCommit(ClientEvent):
    TYPE: ClassVar[str] = "input_audio_buffer.commit"


@dataclass(frozen=True, kw_only=True)
class InputAudioBufferClear(ClientEvent):
    TYPE: ClassVar[str] = "input_audio_buffer.clear"


@dataclass(frozen=True, kw_only=True)
class InputImageBufferAppend(ClientEvent):
    TYPE: ClassVar[str] = "input_image_buffer.append"
    image: bytes = field(default=b"", metadata=B64)


@dataclass(frozen=True, kw_only=True)
class ResponseCreate(ClientEvent):
    TYPE: ClassVar[str] = "response.create"
    response: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class ResponseCancel(ClientEvent):
    TYPE: ClassVar[str] = "response.cancel"


@dataclass(frozen=True, kw_only=True)
class ConversationItemTruncate(ClientEvent):
    """OpenAI only: tell the server how much of an assistant item the user heard."""

    TYPE: ClassVar[str] = "conversation.item.truncate"
    item_id: str = ""
    content_index: int = 0
    audio_end_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class SessionFinish(ClientEvent):
    """DashScope SDK extension: end the session; answered by ``session.finished``."""

    TYPE: ClassVar[str] = "session.finish"


# ---------------------------------------------------------------- server events


@dataclass(frozen=True, kw_only=True)
class SessionCreated(ServerEvent):
    TYPE: ClassVar[str] = "session.created"
    session: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SessionUpdated(ServerEvent):
    TYPE: ClassVar[str] = "session.updated"
    session: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SessionFinished(ServerEvent):
    TYPE: ClassVar[str] = "session.finished"


@dataclass(frozen=True, kw_only=True)
class ErrorEvent(ServerEvent):
    TYPE: ClassVar[str] = "error"
    error: dict[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> str:
        return str(self.error.get("message") or "")

    @property
    def code(self) -> str:
        return str(self.error.get("code") or "")

    @property
    def param(self) -> str:
        return str(self.error.get("param") or "")


@dataclass(frozen=True, kw_only=True)
class SpeechStarted(ServerEvent):
    TYPE: ClassVar[str] = "input_audio_buffer.speech_started"
    audio_start_ms: int = 0
    item_id: str = ""


@dataclass(frozen=True, kw_only=True)
class SpeechStopped(ServerEvent):
    TYPE: ClassVar[str] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int = 0
    item_id: str = ""


@dataclass(frozen=True, kw_only=True)
class InputAudioBufferCommitted(ServerEvent):
    TYPE: ClassVar[str] = "input_audio_buffer.committed"
    item_id: str = ""
    previous_item_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class InputAudioBufferCleared(ServerEvent):
    TYPE: ClassVar[str] = "input_audio_buffer.cleared"


@dataclass(frozen=True, kw_only=True)
class ConversationItemCreated(ServerEvent):
    TYPE: ClassVar[str] = "conversation.item.created"
    item: dict[str, Any] = field(default_factory=dict)
    previous_item_id: str | None = None

    @property
    def role(self) -> str:
        return str(self.item.get("role") or "")


@dataclass(frozen=True, kw_only=True)
class ConversationItemTruncated(ServerEvent):
    TYPE: ClassVar[str] = "conversation.item.truncated"
    item_id: str = ""
    content_index: int = 0
    audio_end_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class InputTranscriptionCompleted(ServerEvent):
    TYPE: ClassVar[str] = "conversation.item.input_audio_transcription.completed"
    item_id: str = ""
    content_index: int = 0
    transcript: str = ""


@dataclass(frozen=True, kw_only=True)
class InputTranscriptionFailed(ServerEvent):
    TYPE: ClassVar[str] = "conversation.item.input_audio_transcription.failed"
    item_id: str = ""
    content_index: int = 0
    error: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ResponseCreated(ServerEvent):
    TYPE: ClassVar[str] = "response.created"
    response: dict[str, Any] = field(default_factory=dict)

    @property
    def response_id(self) -> str:
        return str(self.response.get("id") or "")


@dataclass(frozen=True, kw_only=True)
class ResponseDone(ServerEvent):
    TYPE: ClassVar[str] = "response.done"
    response: dict[str, Any] = field(default_factory=dict)

    @property
    def response_id(self) -> str:
        return str(self.response.get("id") or "")

    @property
    def status(self) -> str:
        return str(self.response.get("status") or "")

    @property
    def usage(self) -> dict[str, Any]:
        usage = self.response.get("usage")
        return usage if isinstance(usage, dict) else {}


@dataclass(frozen=True, kw_only=True)
class _OutputItemEvent(ServerEvent):
    response_id: str = ""
    output_index: int = 0
    item: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class OutputItemAdded(_OutputItemEvent):
    TYPE: ClassVar[str] = "response.output_item.added"


@dataclass(frozen=True, kw_only=True)
class OutputItemDone(_OutputItemEvent):
    TYPE: ClassVar[str] = "response.output_item.done"


@dataclass(frozen=True, kw_only=True)
class _ContentEvent(ServerEvent):
    """Fields shared by every event about one content part of a response item."""

    response_id: str = ""
    item_id: str = ""
    output_index: int = 0
    content_index: int = 0


@dataclass(frozen=True, kw_only=True)
class ContentPartAdded(_ContentEvent):
    TYPE: ClassVar[str] = "response.content_part.added"
    part: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ContentPartDone(_ContentEvent):
    TYPE: ClassVar[str] = "response.content_part.done"
    part: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class AudioTranscriptDelta(_ContentEvent):
    TYPE: ClassVar[str] = "response.audio_transcript.delta"
    delta: str = ""


@dataclass(frozen=True, kw_only=True)
class AudioTranscriptDone(_ContentEvent):
    TYPE: ClassVar[str] = "response.audio_transcript.done"
    transcript: str = ""


@dataclass(frozen=True, kw_only=True)
class AudioDelta(_ContentEvent):
    TYPE: ClassVar[str] = "response.audio.delta"
    delta: bytes = field(default=b"", metadata=B64)


@dataclass(frozen=True, kw_only=True)
class AudioDone(_ContentEvent):
    TYPE: ClassVar[str] = "response.audio.done"


@dataclass(frozen=True, kw_only=True)
class TextDelta(_ContentEvent):
    TYPE: ClassVar[str] = "response.text.delta"
    delta: str = ""


@dataclass(frozen=True, kw_only=True)
class TextDone(_ContentEvent):
    TYPE: ClassVar[str] = "response.text.done"
    text: str = ""


@dataclass(frozen=True, kw_only=True)
class UnknownEvent(ServerEvent, ClientEvent):
    """An event type this library does not model; ``data`` is the whole JSON object."""

    event_type: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.event_type
