"""Exceptions of the realtime client.  Messages never contain the API key."""

from __future__ import annotations


class RealtimeError(Exception):
    """Base class: anything that stops a realtime session from working."""


class UpstreamUnreachable(RealtimeError):
    """The realtime host could not be reached (DNS, refused, TLS, network)."""


class AuthenticationFailed(RealtimeError):
    """The service rejected the API key during the WebSocket upgrade (HTTP 401/403)."""


class HandshakeTimeout(RealtimeError):
    """The WebSocket upgrade did not complete in time."""


class SessionTimeout(RealtimeError):
    """The service did not confirm the session (``session.updated``) in time."""


class SessionRejected(RealtimeError):
    """The service answered ``session.update`` with an error."""


class UpstreamClosed(RealtimeError):
    """The service closed the session (or the connection dropped) while it was in use."""

    def __init__(self, code: int | None, reason: str) -> None:
        self.code = code
        self.reason = reason
        detail = f"code {code}" if code is not None else "no close frame"
        super().__init__(
            f"realtime service closed the session ({detail}){': ' + reason if reason else ''}"
        )


class ImageBeforeAudio(RealtimeError):
    """An image was offered while the input buffer held no audio (the service rejects it)."""
