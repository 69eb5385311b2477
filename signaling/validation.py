"""Validation of what peers send, at the edge, before anything is opened for them.

Pure functions, no I/O: a refused input raises :class:`BadRequest` (or a subclass) whose
``status`` and message the app sends as ``{"error": ...}``. Everything here is bounded
(JSON depth, number length, SDP sections) so that no input reaches a RecursionError, a
huge integer conversion or aiortc's internal errors.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiortc.sdp import SessionDescription

from omni_rtc.calls import CallOptions

MAX_INSTRUCTIONS_CHARS = 4000
MAX_VOICE_CHARS = 64
MODES = ("server_vad", "manual")

MAX_JSON_DEPTH = 32
MAX_NUMBER_CHARS = 32
MAX_MEDIA_SECTIONS = 8
"""A browser offers three (audio, video, data); each section costs aiortc a transceiver."""
MAX_MID_CHARS = 32
DTLS_HASHES = ("sha-256", "sha-384", "sha-512")


class BadRequest(ValueError):
    """A peer's request we refuse with ``status`` (400) and this message."""

    status = 400


class UnsupportedMediaType(BadRequest):
    status = 415


# ------------------------------------------------------------------ request bodies


def check_json_content_type(content_type: str, charset: str | None) -> None:
    """JSON bodies only, in UTF-8 (RFC 8259); anything else is 415."""
    if content_type != "application/json":
        raise UnsupportedMediaType("send the request body as application/json")
    if charset is not None and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise UnsupportedMediaType("JSON bodies must be UTF-8 (charset=utf-8, or no charset)")


def decode_utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("body is not valid UTF-8") from None


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")


def _check_depth(text: str) -> None:
    """Before parsing: json's recursive decoder would overflow on 40,000 nested arrays."""
    depth = 0
    for match in _BRACKETS.finditer(_STRING.sub("", text)):
        depth += 1 if match[0] in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise BadRequest(f"JSON is nested too deeply (at most {MAX_JSON_DEPTH} levels)")


def _number(text: str) -> float | int:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadRequest(f"JSON number too long (at most {MAX_NUMBER_CHARS} characters)")
    return float(text) if any(c in text for c in ".eE") else int(text)


def _no_constants(name: str) -> Any:
    raise BadRequest(f"{name} is not JSON")


def _check_strings(value: Any, where: str) -> None:
    """Lone surrogates (``"\\ud800"``) parse but cannot be sent anywhere as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(
                f"{where} contains an invalid Unicode escape (a lone surrogate)"
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key, "a key")
            _check_strings(item, f"'{key}'" if where == "the body" else where)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item, where)


def parse_json(text: str) -> Any:
    """Standard JSON with bounded depth and number size; :class:`BadRequest` otherwise."""
    _check_depth(text)
    try:
        data = json.loads(
            text, parse_int=_number, parse_float=_number, parse_constant=_no_constants
        )
    except json.JSONDecodeError:
        raise BadRequest("body is not valid JSON") from None
    except RecursionError:  # unreachable after _check_depth; never a 500 all the same
        raise BadRequest("JSON is nested too deeply") from None
    _check_strings(data, "the body")
    return data


# ------------------------------------------------------------------ SDP


_LINE = re.compile(r"[a-z]=[^\x00-\x08\x0a-\x1f\x7f]*")
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
"""RFC 5888 identification-tag (a token), for a=mid and a=group."""


def _check_lines(sdp: str) -> list[str]:
    if not sdp.startswith("v=0"):
        raise BadRequest("'sdp' is not an SDP offer (it must start with v=0)")
    lines = [line for line in re.split(r"\r\n|\n|\r", sdp) if line]
    for number, line in enumerate(lines, 1):
        if not _LINE.fullmatch(line):
            if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", line):
                raise BadRequest(f"'sdp' line {number} contains a control character")
            raise BadRequest(f"'sdp' line {number} is not of the form x=value")
    return lines


def _check_mids(lines: list[str]) -> None:
    sections = sum(1 for line in lines if line.startswith("m="))
    if sections > MAX_MEDIA_SECTIONS:
        raise BadRequest(f"the offer has {sections} media sections (at most {MAX_MEDIA_SECTIONS})")
    mids: list[str] = []
    groups: list[str] = []
    for line in lines:
        if line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
            if not _TOKEN.fullmatch(mid) or len(mid) > MAX_MID_CHARS:
                raise BadRequest(
                    f"a=mid must be 1..{MAX_MID_CHARS} token characters, got {mid[:40]!r}"
                )
            mids.append(mid)
        elif line.startswith("a=group:"):
            groups += line[len("a=group:") :].split()[1:]
    if len(set(mids)) != len(mids):
        raise BadRequest("two media sections of the offer have the same a=mid")
    for mid in groups:
        if mid not in mids:
            raise BadRequest(f"a=group names a media section the offer does not have: {mid[:40]!r}")


def check_sdp_offer(sdp: str, max_bytes: int) -> SessionDescription:
    """An offer aiortc can safely apply: bounded, printable, parseable, with a microphone."""
    try:
        size = len(sdp.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadRequest("'sdp' contains an invalid Unicode escape (a lone surrogate)") from None
    if size > max_bytes:
        raise BadRequest("'sdp' is too large")
    lines = _check_lines(sdp)
    _check_mids(lines)
    try:
        description = SessionDescription.parse(sdp)
    except Exception:  # aiortc's parser raises many kinds of errors on garbage
        raise BadRequest("'sdp' could not be parsed") from None
    audio = [m for m in description.media if m.kind == "audio"]
    if not audio:
        raise BadRequest("the offer has no audio: a call needs the microphone")
    if not any(m.direction in (None, "sendrecv", "sendonly") for m in audio):
        raise BadRequest("the offer's audio is receive-only: a call needs the microphone")
    fingerprints = [f for m in description.media if m.dtls for f in m.dtls.fingerprints]
    if not fingerprints:
        raise BadRequest("the offer has no DTLS fingerprint")
    if not any(f.algorithm.lower() in DTLS_HASHES for f in fingerprints):
        raise BadRequest(
            "the offer's DTLS fingerprints use no hash aiortc checks ("
            + ", ".join(DTLS_HASHES)
            + ")"
        )
    return description


# ------------------------------------------------------------------ POST /offer


def _optional_str(data: dict[str, Any], key: str, limit: int) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string")
    if len(value) > limit:
        raise BadRequest(f"'{key}' is too long (at most {limit} characters)")
    if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", value):
        raise BadRequest(f"'{key}' contains control characters")
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
    check_sdp_offer(sdp, max_sdp_bytes)
    mode = data.get("mode")
    if mode is not None and mode not in MODES:
        raise BadRequest(f"'mode' must be one of: {', '.join(MODES)}")
    options = CallOptions(
        voice=_optional_str(data, "voice", MAX_VOICE_CHARS),
        instructions=_optional_str(data, "instructions", MAX_INSTRUCTIONS_CHARS),
        mode=mode,
    )
    return sdp, options
