"""The realtime events codec: dataclasses <-> JSON text frames, validated.

One generic path for every event (type-checked against the dataclass hints; unknown
keys kept in ``extra``; unknown types become :class:`UnknownEvent`), and fast lanes for
the two events sent 50 times a second per call: caller audio up, reply audio down.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union

from .events import (
    AudioDelta,
    ClientEvent,
    Event,
    InputAudioBufferAppend,
    ProtocolError,
    ServerEvent,
    UnknownEvent,
)

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
