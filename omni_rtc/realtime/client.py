"""The realtime client: the protocol core wrapped around a ``websockets`` connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
)

from . import codec
from . import events as ev
from .errors import (
    AuthenticationFailed,
    HandshakeTimeout,
    ImageBeforeAudio,
    RealtimeError,
    SessionRejected,
    SessionTimeout,
    UpstreamClosed,
    UpstreamUnreachable,
)
from .profiles import ProviderProfile
from .session import SessionConfig
from .state import ConversationState

log = logging.getLogger("omni_rtc.realtime")

# websockets logs every request header at DEBUG, Authorization included.
_wire_log = logging.getLogger("omni_rtc.realtime.wire")


class _RedactAuthorization(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            isinstance(args, tuple)
            and len(args) == 2
            and isinstance(args[0], str)
            and args[0].lower() in ("authorization", "proxy-authorization")
        ):
            record.args = (args[0], "[redacted]")
        return True


_wire_log.addFilter(_RedactAuthorization())

MAX_FRAME_BYTES = 16 * 1024 * 1024


def _host_of(url: str) -> str:
    """The URL without its query, for error messages."""
    return url.split("?", 1)[0]


class RealtimeClient:
    """One realtime session.  Create it with :meth:`connect`; iterate it for server events.

    Iteration raises :class:`UpstreamClosed` when the service ends the session; it ends
    quietly only after :meth:`close`.
    """

    def __init__(
        self, ws: ClientConnection, profile: ProviderProfile, state: ConversationState
    ) -> None:
        self._ws = ws
        self.profile = profile
        self.state = state
        self._pending: deque[ev.ServerEvent] = deque()
        self._closing = False
        self.connect_seconds = 0.0
        """Time from opening the socket to ``session.updated``."""

    # ------------------------------------------------------------ lifecycle

    @classmethod
    async def connect(
        cls,
        *,
        url: str,
        api_key: str | None,
        profile: ProviderProfile,
        session: SessionConfig,
        open_timeout: float = 10.0,
        session_timeout: float = 10.0,
        extra_headers: Mapping[str, str] | None = None,
        keepalive: float = 20.0,
    ) -> RealtimeClient:
        """Open the socket, send ``session.update`` and wait for ``session.updated``.

        A ping goes out every ``keepalive`` seconds; no pong within as long again means
        the network is gone (iteration then raises :class:`UpstreamClosed`).
        """
        started = time.monotonic()
        headers = profile.headers(api_key)
        headers.update(extra_headers or {})
        where = _host_of(url)
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                open_timeout=open_timeout,
                max_size=MAX_FRAME_BYTES,
                compression=None,  # base64 audio barely compresses; deflate costs CPU
                ping_interval=keepalive,
                ping_timeout=keepalive,
                close_timeout=2,
                logger=_wire_log,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise AuthenticationFailed(
                    f"realtime service at {where} rejected the API key (HTTP {status})"
                ) from None
            raise UpstreamUnreachable(
                f"realtime service at {where} refused the WebSocket upgrade (HTTP {status})"
            ) from None
        except TimeoutError:
            raise HandshakeTimeout(
                f"no WebSocket handshake with {where} within {open_timeout:g} s"
            ) from None
        except InvalidURI:
            raise UpstreamUnreachable(f"invalid realtime URL {where!r}") from None
        except (OSError, InvalidHandshake) as exc:
            raise UpstreamUnreachable(
                f"cannot reach realtime service at {where}: {exc.__class__.__name__}: {exc}"
            ) from None

        client = cls(ws, profile, ConversationState())
        try:
            await client._start_session(session, session_timeout)
        except BaseException:
            await client.close()
            raise
        client.connect_seconds = time.monotonic() - started
        return client

    async def _start_session(self, session: SessionConfig, timeout: float) -> None:
        # If the service closed at once, it may have said why first: read on either way.
        with contextlib.suppress(UpstreamClosed):
            await self.send(ev.SessionUpdate(session=session.to_dict()))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SessionTimeout(f"no session.updated within {timeout:g} s")
            try:
                event = await asyncio.wait_for(self._receive(), remaining)
            except TimeoutError:
                raise SessionTimeout(f"no session.updated within {timeout:g} s") from None
            if isinstance(event, ev.SessionUpdated):
                return
            if isinstance(event, ev.ErrorEvent):
                raise SessionRejected(f"session rejected: {event.message}")
            self._pending.append(event)

    async def close(self) -> None:
        self._closing = True
        await self._ws.close()

    async def __aenter__(self) -> RealtimeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closing or self._ws.close_code is not None

    # ------------------------------------------------------------ receiving

    async def _receive(self) -> ev.ServerEvent:
        while True:
            try:
                raw = await self._ws.recv()
            except ConnectionClosed as exc:
                if self._closing:
                    raise
                rcvd = exc.rcvd
                if rcvd is None:
                    raise UpstreamClosed(None, "connection lost") from None
                raise UpstreamClosed(rcvd.code, rcvd.reason) from None
            try:
                event = codec.decode_server_event(raw)
            except ev.ProtocolError as exc:
                log.warning("ignoring malformed frame from the realtime service: %s", str(exc))
                continue
            assert isinstance(event, ev.ServerEvent)
            self.state.received(event)
            return event

    def __aiter__(self) -> AsyncIterator[ev.ServerEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[ev.ServerEvent]:
        while self._pending:
            yield self._pending.popleft()
        while True:
            try:
                yield await self._receive()
            except ConnectionClosed:
                return  # _receive re-raises it only when we closed the session ourselves

    # ------------------------------------------------------------ sending

    async def send(self, event: ev.ClientEvent) -> None:
        if self._closing:
            raise RealtimeError("the realtime session is closed")
        self.state.sent(event)
        try:
            await self._ws.send(codec.encode_event(event))
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            raise UpstreamClosed(
                rcvd.code if rcvd else None, rcvd.reason if rcvd else "connection lost"
            ) from None

    async def append_audio(self, pcm: bytes) -> None:
        """Append pcm16 mono audio at the profile's input rate."""
        if pcm:
            await self.send(ev.InputAudioBufferAppend(audio=pcm))

    async def append_image(self, jpeg: bytes) -> None:
        """Append one JPEG; the service rejects images before audio, so we refuse first."""
        if not self.state.audio_in_buffer:
            raise ImageBeforeAudio("no audio in the input buffer yet; append audio first")
        await self.send(ev.InputImageBufferAppend(image=jpeg))

    async def commit(self) -> None:
        await self.send(ev.InputAudioBufferCommit())

    async def clear(self) -> None:
        await self.send(ev.InputAudioBufferClear())

    async def create_response(
        self, instructions: str | None = None, modalities: list[str] | None = None
    ) -> None:
        response: dict[str, Any] = {}
        if instructions:
            response["instructions"] = instructions
        if modalities:
            response["modalities"] = modalities
        await self.send(ev.ResponseCreate(response=response or None))

    async def cancel_response(self) -> bool:
        """Cancel the active response; returns False (and sends nothing) if none is active."""
        if not self.state.response_active:
            return False
        await self.send(ev.ResponseCancel())
        return True

    async def update_session(self, session: SessionConfig) -> None:
        await self.send(ev.SessionUpdate(session=session.to_dict()))

    async def barge_in(self, played_ms: int | None) -> list[ev.ClientEvent]:
        """Send what the provider's barge-in strategy asks for; returns what was sent."""
        sent = self.state.barge_in_events(self.profile.barge_in, played_ms)
        for event in sent:
            await self.send(event)
        return sent
