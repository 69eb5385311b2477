"""Telephony media streams (Twilio's protocol, Telnyx and Plivo dialects) <-> a conversation.

One WebSocket is one phone call: the far end sends ``start`` (which stream, which audio
format, the TwiML parameters), then 20 ms of caller audio every 20 ms, key presses,
mark echoes and ``stop``. Caller audio goes to the conversation at the stream's rate
(resampled once, statefully, to the model's rate); the reply comes back through a
:class:`MediaStreamSink` (marks, ``clear`` at barge-in). The socket and the conversation
end together, whichever ends first, always with a logged reason; a frame that breaks
the protocol ends the stream, never the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from ..calls import CallOptions
from ..conversation.core import Conversation
from ..conversation.events import ConversationEvent, Ended
from ..realtime.errors import RealtimeError
from .media_stream_dialects import (
    Connected,
    Dialect,
    FrameError,
    Ignored,
    Key,
    Mark,
    Media,
    Skipped,
    Start,
    Stop,
)
from .media_stream_sink import MediaStreamSink, Outbox

if TYPE_CHECKING:
    from ..bridge import Bridge

log = logging.getLogger("omni_rtc.call")

SKIPPED_WARNINGS = 5
"""Skipped frames logged as warnings per call; later ones at DEBUG (no log flooding)."""
CLOSE_CODES = {"hangup": 1000, "protocol_error": 1008, "bad_parameters": 1008}

OptionsFrom = Callable[[Mapping[str, str]], CallOptions]
"""Custom parameters of the start frame -> call options (``ValueError`` if invalid)."""


class StreamEnded(Exception):
    """The stream cannot go on: ``reason`` for metrics, ``detail`` for the log."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class MediaStreamCall:
    """One media-stream WebSocket bridged to one conversation.

    The HTTP layer prepares the socket inside ``bridge.calls.reserve(...)`` and awaits
    :meth:`start` (read up to ``start``, open the model session, register the call);
    if it returns True, :meth:`run` reads the stream until it ends.
    """

    def __init__(
        self,
        bridge: Bridge,
        ws: web.WebSocketResponse,
        dialect: Dialect,
        options_from: OptionsFrom,
        *,
        peer_timeout: float = 10.0,
        peer: str = "?",
    ) -> None:
        self.bridge = bridge
        self.ws = ws
        self.dialect = dialect
        self.options_from = options_from
        self.peer_timeout = peer_timeout
        self.peer = peer
        self.outbox = Outbox()
        self.closed = asyncio.Event()
        self.ended_reason: str | None = None
        self.frames_in = 0
        self._conversation: Conversation | None = None
        self._sink: MediaStreamSink | None = None
        self._start: Start | None = None
        self._closing = False
        self._closer: asyncio.Task[None] | None = None
        self._skipped = 0

    @property
    def conversation(self) -> Conversation:
        if self._conversation is None:
            raise RuntimeError("the stream has not started")
        return self._conversation

    @property
    def id(self) -> str:
        return self.conversation.id

    @property
    def transport(self) -> str:
        return self.dialect.name

    @property
    def stream_id(self) -> str | None:
        return self._start.stream_id if self._start else None

    # ---------------------------------------------------------------- set-up

    async def start(self) -> bool:
        """Read up to ``start`` and start the conversation; False when the stream ended."""
        metrics = self.bridge.metrics
        try:
            start = await self._read_start()
            options = self._options(start)
            sink = MediaStreamSink(self.dialect, start.stream_id, start.codec, self.outbox)
            conversation = self.bridge.conversation(sink, options, transport=self.transport)
        except StreamEnded as ended:
            log.warning("%s media stream from %s refused: %s", self.transport, self.peer, ended)
            metrics.calls_failed.labels(self.transport, ended.reason).inc()
            await self._close_socket(ended.reason, str(ended))
            self.closed.set()
            return False
        self._start, self._sink, self._conversation = start, sink, conversation
        conversation.add_listener(self._on_event)
        try:
            await self.bridge.start_conversation(conversation)  # a failure is logged there
        except RealtimeError:
            await self._close_socket("upstream_unavailable", "the model service is unavailable")
            self.closed.set()
            return False
        conversation.spawn(self._write(), "stream-writer")
        self.bridge.calls.add(self)
        log.info(
            "call %s: started (%s media stream %s, call %s, %s %d Hz, %s, voice %s, "
            "upstream session in %.0f ms)",
            conversation.id,
            self.transport,
            start.stream_id,
            start.call_id or "?",
            start.codec.name,
            start.codec.sample_rate,
            "push-to-talk" if conversation.manual else "hands-free",
            conversation.session.voice,
            (conversation.client.connect_seconds if conversation.client else 0) * 1000,
        )
        return True

    async def _read_start(self) -> Start:
        while True:
            event = await self._next_event(timeout_reason="peer_timeout")
            if event is None:
                raise StreamEnded("peer_closed", "the socket closed before 'start'")
            if isinstance(event, Start):
                return event
            if isinstance(event, Connected | Ignored):
                continue
            if isinstance(event, Skipped):
                self._skip(event)
                continue
            name = "dtmf" if isinstance(event, Key) else type(event).__name__.lower()
            raise StreamEnded("protocol_error", f"'{name}' frame before 'start'")

    def _options(self, start: Start) -> CallOptions:
        parameters = dict(start.parameters)
        parts = [parameters.pop(f"instructions_{i}", "") for i in range(1, 11)]
        if any(parts) and "instructions" not in parameters:  # long text in several parts
            parameters["instructions"] = "".join(parts)
        try:
            options = self.options_from(parameters)
            self.bridge.session_config(options)  # unknown voice, bad mode
        except ValueError as exc:
            raise StreamEnded("bad_parameters", f"bad custom parameters: {exc}") from None
        return options

    # ---------------------------------------------------------------- the stream

    async def run(self) -> None:
        """Read the stream until it, the socket or the conversation ends."""
        reason, detail = "hangup", "the far end sent 'stop'"
        try:
            while not self._closing:
                event = await self._next_event()
                if event is None:
                    reason, detail = "peer_closed", "the far end closed the socket"
                    break
                if isinstance(event, Stop):
                    break
                self._handle(event)
        except StreamEnded as ended:  # logged (and counted) once, by the conversation
            reason, detail = ended.reason, f"media stream: {ended}"
        finally:
            await self.close(reason, detail)

    def _handle(self, event: Connected | Start | Media | Mark | Key | Skipped | Ignored) -> None:
        assert self._start is not None
        assert self._sink is not None
        if isinstance(event, Media):
            if event.stream_id not in (None, self._start.stream_id):
                raise StreamEnded(
                    "protocol_error", f"frame {self.frames_in}: media for another stream"
                )
            if event.payload:
                codec = self._start.codec
                self.conversation.push_audio(codec.decode(event.payload), codec.sample_rate)
        elif isinstance(event, Mark):
            if not self._sink.mark_echoed(event.name):
                log.debug("call %s: mark %s is not pending (cleared)", self.id, event.name)
        elif isinstance(event, Key):
            self.conversation.dtmf(event.digit, event.duration_ms)
        elif isinstance(event, Start):
            raise StreamEnded("protocol_error", f"frame {self.frames_in}: a second 'start'")
        elif isinstance(event, Skipped):
            self._skip(event)

    async def _next_event(
        self, timeout_reason: str = "peer_failed"
    ) -> Connected | Start | Media | Mark | Key | Stop | Skipped | Ignored | None:
        """The next frame, parsed; None when the socket closed."""
        try:
            message = await self.ws.receive(timeout=self.peer_timeout)
        except asyncio.TimeoutError:
            raise StreamEnded(
                timeout_reason, f"nothing from the far end for {self.peer_timeout:.0f} s"
            ) from None
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return None
        if message.type == WSMsgType.ERROR:  # e.g. a frame over the size limit
            raise StreamEnded("protocol_error", f"bad WebSocket frame: {message.data}")
        if message.type != WSMsgType.TEXT:
            raise StreamEnded("protocol_error", "binary frame (the protocol is JSON text)")
        self.frames_in += 1
        try:
            return self.dialect.parse(message.data)
        except FrameError as exc:
            raise StreamEnded("protocol_error", f"frame {self.frames_in}: {exc}") from None

    def _skip(self, event: Skipped) -> None:
        self._skipped += 1
        level = logging.WARNING if self._skipped <= SKIPPED_WARNINGS else logging.DEBUG
        log.log(
            level,
            "%s media stream: skipped frame %d: %s",
            self.transport,
            self.frames_in,
            event.reason,
        )

    async def _write(self) -> None:
        """Frames from the sink to the socket, in order (``clear`` jumps the queue)."""
        while True:
            text = await self.outbox.get()
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return  # the socket is closing; the reader ends the call

    # ---------------------------------------------------------------- ending

    def _on_event(self, event: ConversationEvent) -> None:
        if isinstance(event, Ended) and not self._closing and self._closer is None:
            log.info("call %s: closing the media stream (%s)", self.id, event.reason)
            self._closer = asyncio.create_task(self.close(event.reason))

    async def close(self, reason: str = "hangup", detail: str = "") -> None:
        """End the conversation and close the socket (ends Twilio's ``<Connect>``)."""
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        if self._conversation is not None:
            await self._conversation.close(reason, detail)
            self.ended_reason = self._conversation.ended_reason
        await self._close_socket(self.ended_reason or reason, self.ended_reason or reason)
        self.closed.set()

    async def _close_socket(self, reason: str, message: str) -> None:
        code = CLOSE_CODES.get(reason, 1011 if "upstream" in reason else 1000)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code=code, message=message[:120].encode()), 2)
