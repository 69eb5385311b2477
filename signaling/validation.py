"""Validation of what peers send, at the edge, before anything is opened for them."""

from __future__ import annotations

from typing import Any

from aiortc.sdp import SessionDescription

from omni_rtc.calls import CallOptions

MAX_INSTRUCTIONS_CHARS = 4000
MAX_VOICE_CHARS = 64
MODES = ("server_vad", "manual")


class BadRequest(ValueError):
    """A peer's request we refuse with 400 and this message."""


def _optional_str(data: dict[str, Any], key: str, limit: int) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string")
    if len(value) > limit:
        raise BadRequest(f"'{key}' is too long (at most {limit} characters)")
    return value


def parse_offer(data: Any, max_sdp_bytes: int) -> tuple[str, CallOptions]:
    """Check a ``POST /offer`` body; returns the SDP and the per-call options."""
    if not isinstance(data, dict):
        raise BadRequest('body must be a JSON object like {"sdp": "...", "type": "offer"}')
    if data.get("type") != "offer":
        raise BadRequest("'type' must be \"offer\"")
    sdp = data.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip():
        raise BadRequest("'sdp' must be a non-empty string")
    if len(sdp.encode()) > max_sdp_bytes:
        raise BadRequest("'sdp' is too large")
    if not sdp.startswith("v=0"):
        raise BadRequest("'sdp' is not an SDP offer (it must start with v=0)")
    try:
        description = SessionDescription.parse(sdp)
    except Exception:  # aiortc's parser raises many kinds of errors on garbage
        raise BadRequest("'sdp' could not be parsed") from None
    audio = [m for m in description.media if m.kind == "audio"]
    if not audio:
        raise BadRequest("the offer has no audio: a call needs the microphone")
    if not any(m.direction in (None, "sendrecv", "sendonly") for m in audio):
        raise BadRequest("the offer's audio is receive-only: a call needs the microphone")
    if not any(m.dtls and m.dtls.fingerprints for m in description.media):
        raise BadRequest("the offer has no DTLS fingerprint")
    mode = data.get("mode")
    if mode is not None and mode not in MODES:
        raise BadRequest(f"'mode' must be one of: {', '.join(MODES)}")
    options = CallOptions(
        voice=_optional_str(data, "voice", MAX_VOICE_CHARS),
        instructions=_optional_str(data, "instructions", MAX_INSTRUCTIONS_CHARS),
        mode=mode,
    )
    return sdp, options
