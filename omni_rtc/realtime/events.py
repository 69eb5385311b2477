"""Realtime protocol events as plain data (no I/O).

Every client and server event of the OpenAI-Realtime-style protocol that Qwen-Omni
speaks is a frozen dataclass.  One generic codec turns them into JSON-ready dicts
and back: base64 fields (``audio``, ``image``, audio ``delta``) are ``bytes`` here,
keys we do not model are kept in ``extra``, and unknown event types become
:class:`UnknownEvent` instead of being dropped, so a newer server never breaks us.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union

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
    "decode_client_event",
    "decode_server_event",
    "encode_event",
    "event_from_dict",
    "event_to_dict",
]


class ProtocolError(ValueError):
    """A frame that is not a valid event (bad JSON, missing type, wrong field type)."""


B64 = {"b64": True}


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


# ---------------------------------------------------------------- codec

E = TypeVar("E", bound=Event)


def _registry(base: type[Event]) -> dict[str, type[Event]]:
    found: dict[str, type[Event]] = {}
    pending: list[type[Event]] = [base]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.TYPE and cls is not UnknownEvent:
            found[cls.TYPE] = cls
    return found


CLIENT_EVENTS: dict[str, type[Event]] = _registry(ClientEvent)
SERVER_EVENTS: dict[str, type[Event]] = _registry(ServerEvent)

_HINTS: dict[type[Event], dict[str, Any]] = {}


def _hints(cls: type[Event]) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _matches(value: Any, hint: Any) -> bool:
    """Loose runtime check of a JSON value against a field's annotation."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    base = origin or hint
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base in (dict, Mapping):
        return isinstance(value, dict)
    if base is list:
        return isinstance(value, list)
    return isinstance(value, base)


def event_to_dict(event: Event) -> dict[str, Any]:
    """Turn an event into the JSON object sent on the wire (``None`` fields omitted)."""
    if isinstance(event, UnknownEvent):
        return dict(event.data)
    out: dict[str, Any] = {"type": event.TYPE}
    for f in dataclasses.fields(event):
        if f.name == "extra":
            continue
        value = getattr(event, f.name)
        if value is None:
            continue
        if f.metadata.get("b64"):
            value = base64.b64encode(value).decode("ascii")
        out[f.name] = value
    for key, value in event.extra.items():
        out.setdefault(key, value)
    return out


def encode_event(event: Event) -> str:
    """Serialise an event to one JSON text frame."""
    if type(event) is InputAudioBufferAppend and event.event_id is None and not event.extra:
        # the hot path (50 frames a second per call): same JSON, no dict on the way
        audio = base64.b64encode(event.audio).decode("ascii")
        return '{"type":"input_audio_buffer.append","audio":"' + audio + '"}'
    return json.dumps(event_to_dict(event), separators=(",", ":"), ensure_ascii=False)


def event_from_dict(data: Mapping[str, Any], registry: Mapping[str, type[Event]]) -> Event:
    """Build the typed event for ``data``; unknown types become :class:`UnknownEvent`."""
    event_type = data.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise ProtocolError("event has no 'type'")
    cls = registry.get(event_type)
    if cls is None:
        event_id = data.get("event_id")
        return UnknownEvent(
            event_type=event_type,
            data=dict(data),
            event_id=event_id if isinstance(event_id, str) else None,
        )
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    known = {"type", "extra"}
    for f in dataclasses.fields(cls):
        if f.name == "extra":
            continue
        known.add(f.name)
        if f.name not in data:
            continue
        value = data[f.name]
        if f.metadata.get("b64"):
            kwargs[f.name] = _b64decode(value, f"{event_type}.{f.name}")
            continue
        if value is None and f.default is not dataclasses.MISSING and f.default is not None:
            continue  # a null where we expect a scalar: keep our default
        if value is None and f.default_factory is not dataclasses.MISSING:
            continue
        if not _matches(value, hints[f.name]):
            raise ProtocolError(
                f"{event_type}.{f.name} has the wrong type ({type(value).__name__})"
            )
        kwargs[f.name] = value
    extra = {k: v for k, v in data.items() if k not in known}
    return cls(**kwargs, extra=extra)


def _b64decode(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(f"{where} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{where} is not valid base64") from None


def _decode(text: str | bytes, registry: Mapping[str, type[Event]]) -> Event:
    if isinstance(text, bytes):
        raise ProtocolError("binary frames are not part of this protocol")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"frame is not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ProtocolError("frame is not a JSON object")
    if data.get("type") == "response.audio.delta" and registry is SERVER_EVENTS:
        fast = _audio_delta(data)
        if fast is not None:
            return fast
    return event_from_dict(data, registry)


_DELTA_KEYS = frozenset(
    {"type", "event_id", "response_id", "item_id", "output_index", "content_index", "delta"}
)


def _audio_delta(data: dict[str, Any]) -> AudioDelta | None:
    """The hot path for reply audio; None sends anything unusual the generic way."""
    if not data.keys() <= _DELTA_KEYS:
        return None
    event_id = data.get("event_id")
    response_id = data.get("response_id", "")
    item_id = data.get("item_id", "")
    output_index = data.get("output_index", 0)
    content_index = data.get("content_index", 0)
    if not (
        isinstance(event_id, (str, type(None)))
        and isinstance(response_id, str)
        and isinstance(item_id, str)
        and type(output_index) is int
        and type(content_index) is int
    ):
        return None
    return AudioDelta(
        event_id=event_id,
        response_id=response_id,
        item_id=item_id,
        output_index=output_index,
        content_index=content_index,
        delta=_b64decode(data.get("delta", ""), "response.audio.delta.delta"),
    )


def decode_server_event(text: str | bytes) -> Event:
    """Parse a frame received from the realtime server."""
    return _decode(text, SERVER_EVENTS)


def decode_client_event(text: str | bytes) -> Event:
    """Parse a frame received from a realtime client (used by the emulator)."""
    return _decode(text, CLIENT_EVENTS)
