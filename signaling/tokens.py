"""Signed, expiring call links: HMAC-SHA256 over a few claims, keyed by the access token.

An operator hands out a link instead of the access token itself; the server needs no
database to check it (signature, then expiry). The optional voice, instructions and
mode in a link bind the call it starts. Format: ``v1.<claims>.<signature>``, both parts
unpadded base64url, so a token fits in a URL and an ``Authorization`` header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from .validation import MAX_INSTRUCTIONS_CHARS, MAX_VOICE_CHARS, MODES

VERSION = "v1"
MAX_TOKEN_CHARS = 8000
"""Well below aiohttp's 8190-byte header limit, with room for 4000 characters of instructions."""


class InvalidToken(ValueError):
    """Not a call link this server signed, or one that has expired (the message says which)."""


@dataclass(frozen=True)
class CallClaims:
    """What a call link allows: calls until ``expires`` (Unix time), with these settings."""

    expires: int
    voice: str | None = None
    instructions: str | None = None
    mode: str | None = None

    def check(self) -> None:
        """``ValueError`` for claims no call could use (checked when minting and verifying)."""
        if self.voice is not None and not 0 < len(self.voice) <= MAX_VOICE_CHARS:
            raise ValueError(f"voice must be 1..{MAX_VOICE_CHARS} characters")
        if self.instructions is not None and len(self.instructions) > MAX_INSTRUCTIONS_CHARS:
            raise ValueError(f"instructions must be at most {MAX_INSTRUCTIONS_CHARS} characters")
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"mode must be one of: {', '.join(MODES)}")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(access_token: str, signed: str) -> str:
    # A key of its own, derived from the access token, so a signature is never usable as
    # anything else that the token keys.
    key = hmac.new(access_token.encode(), b"omni-rtc call link", hashlib.sha256).digest()
    return _b64encode(hmac.new(key, signed.encode(), hashlib.sha256).digest())


def mint(
    access_token: str,
    ttl_s: float,
    *,
    voice: str | None = None,
    instructions: str | None = None,
    mode: str | None = None,
    now: float | None = None,
) -> str:
    """A call link token valid for ``ttl_s`` seconds (``ValueError`` for unusable claims)."""
    if ttl_s <= 0:
        raise ValueError("the lifetime must be positive")
    claims = CallClaims(
        int((time.time() if now is None else now) + ttl_s), voice, instructions, mode
    )
    claims.check()
    body: dict[str, Any] = {"exp": claims.expires}
    body.update(
        {
            k: v
            for k, v in (("voice", voice), ("instructions", instructions), ("mode", mode))
            if v is not None
        }
    )
    signed = VERSION + "." + _b64encode(json.dumps(body, separators=(",", ":")).encode())
    token = signed + "." + _signature(access_token, signed)
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError("the call link is too long: shorten the instructions")
    return token


def verify(access_token: str, token: str, now: float | None = None) -> CallClaims:
    """The claims of a valid, unexpired token; :class:`InvalidToken` otherwise."""
    if len(token) > MAX_TOKEN_CHARS or not token.isascii() or token.count(".") != 2:
        raise InvalidToken("not a valid access token or call link")
    version, payload, signature = token.split(".")
    expected = _signature(access_token, f"{version}.{payload}")
    if version != VERSION or not hmac.compare_digest(signature.encode(), expected.encode()):
        raise InvalidToken("not a valid access token or call link")
    try:  # signed by us, so well-formed unless the format changed
        body = json.loads(_b64decode(payload))
        claims = CallClaims(
            expires=body["exp"],
            voice=body.get("voice"),
            instructions=body.get("instructions"),
            mode=body.get("mode"),
        )
        if not isinstance(claims.expires, int) or not all(
            v is None or isinstance(v, str)
            for v in (claims.voice, claims.instructions, claims.mode)
        ):
            raise TypeError("claim types")
        claims.check()
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise InvalidToken("not a valid access token or call link") from None
    if claims.expires <= (time.time() if now is None else now):
        raise InvalidToken("this call link has expired")
    return claims
