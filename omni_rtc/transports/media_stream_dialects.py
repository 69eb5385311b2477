"""Telephony media-stream dialects (Twilio, Telnyx, Plivo) as pure parse/build functions.

The three services speak the same idea over a WebSocket: JSON frames with base64 audio,
a start frame that names the stream and its audio format, marks (checkpoints) echoed
when the audio before them has been played, and a command that empties the far end's
buffer. They differ in field names and in a few event names; each :class:`Dialect`
holds those differences and nothing else. No I/O here: text in, typed events out;
typed commands in, text out (tests feed recorded frames).

A frame that breaks the protocol raises :class:`FrameError` (the stream ends with its
message); a frame we can do without comes back as :class:`Skipped` (logged) or
:class:`Ignored` (a normal event we have no use for).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

MAX_FRAME_BYTES = 64 * 1024
"""Largest frame accepted (a 20 ms μ-law media frame is ~400 bytes of JSON)."""
MAX_PARAMETERS = 32
MAX_PARAMETER_CHARS = 4096


class FrameError(ValueError):
    """The peer broke the protocol: the stream ends, with this message in the log."""


# -------------------------------------------------------------------- audio formats


def _swap16(pcm: bytes) -> bytes:
    swapped = bytearray(pcm[: len(pcm) - len(pcm) % 2])
    swapped[0::2], swapped[1::2] = swapped[1::2], swapped[0::2]
    return bytes(swapped)


@dataclass(frozen=True)
class Codec:
    """The stream's audio: G.711 μ-law or A-law, or 16-bit linear (big-endian, RFC 3551)."""

    name: str
    """``PCMU``, ``PCMA`` or ``L16``."""
    sample_rate: int
    content_type: str = "audio/x-mulaw"
    decode: Callable[[bytes], bytes] = field(default=ulaw_decode, repr=False)
    """Wire payload -> pcm16 little-endian."""
    encode: Callable[[bytes], bytes] = field(default=ulaw_encode, repr=False)
    """pcm16 little-endian -> wire payload."""


PCMU = Codec("PCMU", 8000)
PCMA = Codec("PCMA", 8000, "audio/x-alaw", alaw_decode, alaw_encode)


def l16(rate: int) -> Codec:
    return Codec("L16", rate, "audio/l16", _swap16, _swap16)


# -------------------------------------------------------------------- events in


@dataclass(frozen=True)
class Connected:
    """The socket is open (Twilio, Telnyx); ``start`` follows."""


@dataclass(frozen=True)
class Start:
    stream_id: str
    call_id: str | None
    codec: Codec
    parameters: dict[str, str]
    """Custom parameters (TwiML ``<Parameter>``): voice, instructions, mode."""


@dataclass(frozen=True)
class Media:
    payload: bytes
    """Encoded audio as it came (decode with the start frame's codec)."""
    stream_id: str | None = None


@dataclass(frozen=True)
class Mark:
    """A mark we sent came back: the audio before it has been played (or cleared)."""

    name: str


@dataclass(frozen=True)
class Key:
    """A DTMF key press."""

    digit: str
    duration_ms: int = 0


@dataclass(frozen=True)
class Stop:
    """The far end ends the stream (the call hung up, or the TwiML moved on)."""


@dataclass(frozen=True)
class Skipped:
    """A frame we cannot use but can live without (logged as a warning)."""

    reason: str


@dataclass(frozen=True)
class Ignored:
    """A normal frame we have no use for (e.g. the other direction's audio)."""

    what: str


InboundEvent = Connected | Start | Media | Mark | Key | Stop | Skipped | Ignored


# -------------------------------------------------------------------- helpers


def load_frame(text: str) -> tuple[str, dict[str, Any]]:
    """JSON text -> (event name, frame); :class:`FrameError` for anything else."""
    if len(text) > MAX_FRAME_BYTES:
        raise FrameError(f"frame too large ({len(text)} characters)")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # also numbers too long and nesting too deep
        raise FrameError("frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise FrameError("frame is not a JSON object")
    event = data.get("event")
    if not isinstance(event, str) or not event:
        raise FrameError("frame has no 'event'")
    return event, data


def _object(data: Mapping[str, Any], key: str, event: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise FrameError(f"'{event}' frame has no '{key}' object")
    return value


def _text(data: Mapping[str, Any], key: str, event: str, *, limit: int = 256) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise FrameError(f"'{event}' frame has no valid '{key}'")
    return value


def _optional_text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value and len(value) <= 256 else None


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 6:
        return int(value)
    return None


def _payload(media: Mapping[str, Any]) -> bytes:
    value = media.get("payload")
    if not isinstance(value, str):
        raise FrameError("'media' frame has no 'payload' string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FrameError("'media' payload is not base64") from None


def _parameters(start: Mapping[str, Any]) -> dict[str, str]:
    raw = start.get("customParameters", start.get("custom_parameters"))
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_PARAMETERS:
        raise FrameError("custom parameters must be an object of at most 32 names")
    out: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(value, str) or len(name) + len(value) > MAX_PARAMETER_CHARS:
            raise FrameError(f"custom parameter {name[:40]!r} must be a short string")
        out[name] = value
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def dump(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"))


# -------------------------------------------------------------------- dialects


class Dialect:
    """Twilio's protocol; the subclasses change names, not behaviour."""

    name: ClassVar[str] = "twilio"
    stream_key: ClassVar[str] = "streamSid"

    def parse(self, text: str) -> InboundEvent:
        event, data = load_frame(text)
        if event == "connected":
            return Connected()
        if event == "start":
            return self.start(data)
        if event == "media":
            return self.media_in(data)
        if event == "mark":
            return Mark(_text(_object(data, "mark", event), "name", event))
        if event == "dtmf":
            dtmf = _object(data, "dtmf", event)
            digit = dtmf.get("digit")
            if not isinstance(digit, str) or len(digit) != 1:
                return Skipped("'dtmf' frame without a one-character 'digit'")
            return Key(digit, _number(dtmf.get("duration")) or 0)
        if event == "stop":
            return Stop()
        return self.other(event, data)

    def start(self, data: dict[str, Any]) -> Start:
        start = _object(data, "start", "start")
        stream_id = _optional_text(start, self.stream_key) or _text(data, self.stream_key, "start")
        call_id = _optional_text(start, "callSid")
        fmt = _object(start, "mediaFormat", "start")
        encoding, rate, channels = fmt.get("encoding"), _number(fmt.get("sampleRate")), None
        if "channels" in fmt:
            channels = _number(fmt.get("channels"))
        if encoding != "audio/x-mulaw" or rate != 8000 or channels not in (None, 1):
            raise FrameError(
                f"unsupported media format {str(encoding)[:40]} {rate} Hz: "
                "this endpoint takes audio/x-mulaw, 8000 Hz, mono"
            )
        return Start(stream_id, call_id, PCMU, _parameters(start))

    def media_in(self, data: dict[str, Any]) -> Media | Ignored:
        media = _object(data, "media", "media")
        track = media.get("track")
        if track not in (None, "inbound", "inbound_track"):
            return Ignored(f"{track} audio")
        return Media(_payload(media), _optional_text(data, self.stream_key))

    def other(self, event: str, data: dict[str, Any]) -> InboundEvent:
        return Skipped(f"unknown event {event[:40]!r}")

    # ---------------------------------------------------------------- commands out

    def media(self, stream_id: str, payload: bytes, codec: Codec) -> str:
        return dump({"event": "media", "streamSid": stream_id, "media": {"payload": _b64(payload)}})

    def mark(self, stream_id: str, name: str) -> str:
        return dump({"event": "mark", "streamSid": stream_id, "mark": {"name": name}})

    def clear(self, stream_id: str) -> str:
        return dump({"event": "clear", "streamSid": stream_id})


class TelnyxDialect(Dialect):
    """Telnyx media streaming (bidirectional RTP mode): PCMU, PCMA or L16; snake_case
    fields; commands need no stream id."""

    name = "telnyx"
    stream_key = "stream_id"

    def start(self, data: dict[str, Any]) -> Start:
        start = _object(data, "start", "start")
        stream_id = _optional_text(data, "stream_id") or _text(start, "stream_id", "start")
        call_id = _optional_text(start, "call_control_id")
        fmt = _object(start, "media_format", "start")
        encoding, rate = fmt.get("encoding"), _number(fmt.get("sample_rate"))
        channels = _number(fmt.get("channels")) if "channels" in fmt else None
        codec: Codec | None = None
        if encoding == "PCMU" and rate == 8000:
            codec = PCMU
        elif encoding == "PCMA" and rate == 8000:
            codec = PCMA
        elif encoding == "L16" and rate in (8000, 16000):
            codec = l16(rate)
        if codec is None or channels not in (None, 1):
            raise FrameError(
                f"unsupported media format {str(encoding)[:40]} {rate} Hz: "
                "this endpoint takes PCMU or PCMA at 8000 Hz, or L16 at 8000/16000 Hz, mono"
            )
        return Start(stream_id, call_id, codec, _parameters(start))

    def other(self, event: str, data: dict[str, Any]) -> InboundEvent:
        if event == "error":
            payload = data.get("payload")
            detail = (
                payload.get("detail") or payload.get("title") if isinstance(payload, dict) else None
            )
            return Skipped(f"Telnyx reports an error: {str(detail)[:200]}")
        return super().other(event, data)

    def media(self, stream_id: str, payload: bytes, codec: Codec) -> str:
        return dump({"event": "media", "media": {"payload": _b64(payload)}})

    def mark(self, stream_id: str, name: str) -> str:
        return dump({"event": "mark", "mark": {"name": name}})

    def clear(self, stream_id: str) -> str:
        return dump({"event": "clear"})


class PlivoDialect(Dialect):
    """Plivo audio streams (bidirectional, audio/x-mulaw 8000): ``playAudio``,
    ``checkpoint`` answered by ``playedStream``, ``clearAudio``."""

    name = "plivo"
    stream_key = "streamId"

    def start(self, data: dict[str, Any]) -> Start:
        start = _object(data, "start", "start")
        stream_id = _optional_text(start, "streamId") or _text(data, "streamId", "start")
        fmt = _object(start, "mediaFormat", "start")
        encoding, rate = fmt.get("encoding"), _number(fmt.get("sampleRate"))
        if encoding != "audio/x-mulaw" or rate != 8000:
            raise FrameError(
                f"unsupported media format {str(encoding)[:40]} {rate} Hz: set "
                'contentType="audio/x-mulaw;rate=8000" on the <Stream> element'
            )
        return Start(stream_id, _optional_text(start, "callId"), PCMU, _parameters(start))

    def other(self, event: str, data: dict[str, Any]) -> InboundEvent:
        if event in ("playedStream", "played"):
            return Mark(_text(data, "name", event))
        if event == "clearedAudio":
            return Ignored("clearedAudio")
        return super().other(event, data)

    def media(self, stream_id: str, payload: bytes, codec: Codec) -> str:
        media = {"contentType": codec.content_type, "sampleRate": codec.sample_rate}
        return dump({"event": "playAudio", "media": {**media, "payload": _b64(payload)}})

    def mark(self, stream_id: str, name: str) -> str:
        return dump({"event": "checkpoint", "streamId": stream_id, "name": name})

    def clear(self, stream_id: str) -> str:
        return dump({"event": "clearAudio", "streamId": stream_id})


DIALECTS: dict[str, Dialect] = {d.name: d for d in (Dialect(), TelnyxDialect(), PlivoDialect())}
"""By transport name (the URL path's first part: /twilio/stream, /telnyx/stream, ...)."""
