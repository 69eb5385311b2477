"""The public entry point: a :class:`Bridge` owns settings, calls, capacity and metrics.

Embed it in three ways: mount its HTTP routes into your own aiohttp application, hand
it a peer connection your program negotiates, or open an audio pipe.  It starts the
built-in emulator when there is no API key and no upstream URL, as ``omni-rtc serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError

from .calls import CallManager, CallOptions, CapacityError, OfferError
from .config import Settings
from .conversation.core import Conversation
from .conversation.events import Notice
from .conversation.limits import CallLimits
from .conversation.sinks import PcmReplyQueue, ReplySink
from .dtls import allow_rsa_peers
from .emulator import Emulator, EmulatorConfig
from .ice import restrict_host_addresses, rtc_configuration
from .loop_load import LoopLoad
from .media.reply_track import ReplyTrack
from .media.resample import use_in_aiortc
from .metrics import Metrics
from .realtime.client import RealtimeClient
from .realtime.errors import AuthenticationFailed, RealtimeError
from .realtime.session import SessionConfig
from .transports import aiortc_fastpath, sctp_guard
from .transports.pipe import AudioPipe, check_rate
from .transports.webrtc import WebRtcCall

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("omni_rtc.calls")

__all__ = ["Bridge", "CallOptions", "CapacityError", "OfferError"]


def _offer_failure(exc: Exception) -> str:
    """aiortc's own errors describe the offer; anything else is an internal detail (logged)."""
    if isinstance(exc, (ValueError, InvalidAccessError, InvalidStateError, OperationError)) and str(
        exc
    ):
        return f"cannot answer this offer: {exc}"
    log.info("cannot answer an offer: %r", exc)  # the call's WARNING line follows
    return "cannot answer this offer: aiortc could not apply it"


JPEG_THREAD_NICENESS = 10
"""How many nice steps below the event loop the JPEG threads run."""


def run_below_the_loop() -> None:
    """Lower the calling thread's priority (an executor initializer for the JPEG threads).

    An image may leave tens of milliseconds late; a caller's audio and the model's reply
    may not.  On a core that the loop shares with these threads, a JPEG at the same
    priority held the loop off its sockets and reply clock: beside 24 A/V calls the beep
    round trip was 143-150 ms with the threads niced against 154-171 without (bench/
    RESULTS.md), at the same 2 images a second.  Only Linux takes a thread id for a
    process id here (elsewhere it could renice another process): other platforms, and
    a priority that cannot change, leave the threads as they were.
    """
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    with contextlib.suppress(AttributeError, OSError):
        niceness = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, niceness + JPEG_THREAD_NICENESS))


class Bridge:
    """Build from :class:`Settings` or from keyword arguments named like the CLI flags
    (``Bridge(api_key=..., model=..., max_calls=4)``); ``async with`` or start/close it.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        upstream_url: str | None = None,
        metrics: Metrics | None = None,
        call_id_prefix: str = "",
        **options: Any,
    ) -> None:
        if settings is not None and options:
            raise TypeError("give either Settings or keyword options, not both")
        self.settings = settings or Settings(**options)
        self.call_id_prefix = call_id_prefix
        """Worker processes put their index here, so the front routes by call id."""
        sctp_guard.install()
        aiortc_fastpath.install()  # decode and encode on the loop, not in aiortc's threads
        use_in_aiortc()  # no resampler threads per call in aiortc's encoders
        allow_rsa_peers()  # DTLS with RSA-certificate peers (GStreamer, WHIP tools)
        self.metrics = metrics or Metrics()
        self.load = LoopLoad(self.settings.max_loop_busy / 100)
        self.calls = CallManager(self.settings.max_calls, self.metrics, self.load)
        self.metrics.watch_overload(
            lambda: self.calls.overloaded,
            lambda: self.load.lean_share,
            lambda: self.load.light,
        )
        self.executor = ThreadPoolExecutor(
            max_workers=max(2, min(4, os.cpu_count() or 2)),
            thread_name_prefix="omni-rtc-jpeg",
            initializer=run_below_the_loop,
        )
        self._upstream_url = upstream_url or self.settings.base_url()
        self._emulator: Emulator | None = None
        self._start_lock = asyncio.Lock()
        self._closed = False

    # ---------------------------------------------------------------- lifecycle

    @property
    def upstream_url(self) -> str:
        """The realtime base URL (the built-in emulator's once started offline)."""
        if self._upstream_url is None:
            raise RuntimeError("the bridge is not started: await bridge.start() first")
        return self._upstream_url

    async def start(self) -> None:
        """Start the built-in emulator when offline; idempotent.

        ``ice_host_addresses``, when set, restricts ICE host candidates process-wide.
        """
        if self.settings.ice_host_addresses:
            restrict_host_addresses(self.settings.ice_host_addresses)
        if not self._closed:
            self.load.start()
        async with self._start_lock:
            if self._upstream_url is None:
                emulator = Emulator(
                    EmulatorConfig(
                        reply=self.settings.emulator_reply,  # type: ignore[arg-type]
                        keep_sessions=8,  # offline serving needs no history
                        record_seconds=5.0,
                    ),
                    avoid_port=self.settings.port,  # the app's own port, bound later
                )
                await emulator.start()
                self._emulator = emulator
                self._upstream_url = emulator.url

    async def close(self, reason: str = "server_shutdown") -> None:
        """End every call, then stop what the bridge started."""
        if self._closed:
            return
        self._closed = True
        await self.calls.close_all(reason)
        self.load.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._emulator is not None:
            await self._emulator.stop()
            self._emulator = None

    async def drain(self, seconds: float, hurry: asyncio.Event | None = None) -> None:
        """Refuse new calls; let running ones go on up to ``seconds`` (or until ``hurry``),
        then end them with ``server_shutdown``, which callers are told."""
        self.calls.accepting = False
        if self.calls.active and seconds > 0:
            for call in self.calls.list():
                call.conversation.emit(
                    Notice(
                        f"The server is shutting down: this call can go on for up to "
                        f"{seconds:.0f} s more."
                    )
                )
            waiters = [asyncio.ensure_future(self.calls.empty.wait())]
            if hurry is not None:
                waiters.append(asyncio.ensure_future(hurry.wait()))
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        await self.calls.close_all("server_shutdown")

    async def __aenter__(self) -> Bridge:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ---------------------------------------------------------------- conversations

    def session_config(self, options: CallOptions | None = None) -> SessionConfig:
        """The session for one call (``ValueError`` for an unknown voice or bad mode)."""
        options = options or CallOptions()
        if options.mode not in (None, "server_vad", "manual"):
            raise ValueError("mode must be server_vad or manual")
        return self.settings.session_config(
            voice=options.voice,
            instructions=options.instructions,
            manual=None if options.mode is None else options.mode == "manual",
        )

    async def open_session(self, session: SessionConfig) -> RealtimeClient:
        """Open one realtime session with the server's key (never sent anywhere else)."""
        await self.start()
        settings = self.settings
        profile = settings.profile
        client = await RealtimeClient.connect(
            url=profile.url(settings.model_name, self.upstream_url),
            api_key=settings.api_key,
            profile=profile,
            session=session,
            open_timeout=settings.connect_timeout,
            session_timeout=settings.connect_timeout,
            keepalive=settings.upstream_ping_seconds,
        )
        self.metrics.upstream_connect.observe(client.connect_seconds)
        return client

    def conversation(
        self,
        sink: ReplySink,
        options: CallOptions | None = None,
        *,
        transport: str = "pipe",
        call_id: str | None = None,
    ) -> Conversation:
        """A conversation (not started) with this bridge's settings, key and metrics."""
        settings = self.settings
        return Conversation(
            session=self.session_config(options),
            profile=settings.profile,
            open_session=self.open_session,
            sink=sink,
            metrics=self.metrics,
            executor=self.executor,
            call_id=call_id or self.call_id_prefix + secrets.token_urlsafe(16),
            transport=transport,
            chunk_ms=settings.chunk_ms,
            video_fps=settings.video_fps,
            jpeg_limits=settings.jpeg_limits,
            limits=CallLimits(
                max_call_seconds=settings.max_call_seconds or None,
                idle_seconds=settings.idle_seconds or None,
            ),
            reconnect_seconds=settings.reconnect_seconds,
        )

    async def start_conversation(self, conversation: Conversation) -> None:
        """Open its session (call it inside ``calls.reserve``); failures end it, counted."""
        try:
            await conversation.start()
        except AuthenticationFailed as exc:
            await conversation.close("upstream_auth", str(exc))  # counted, logged once
            raise
        except RealtimeError as exc:
            await conversation.close("upstream_unavailable", str(exc))
            raise

    # ---------------------------------------------------------------- bring your own pipe

    async def open_pipe(
        self,
        *,
        input_rate: int = 16_000,
        output_rate: int = 16_000,
        voice: str | None = None,
        instructions: str | None = None,
        mode: str | None = None,
    ) -> AudioPipe:
        """A started conversation fed with your pcm16 (8/16/24/48 kHz) and read back."""
        check_rate("input_rate", input_rate)
        sink = PcmReplyQueue(check_rate("output_rate", output_rate))
        conversation = self.conversation(sink, CallOptions(voice, instructions, mode))
        pipe = AudioPipe(conversation, sink, input_rate)
        with self.calls.reserve("pipe"):
            await self.start_conversation(conversation)
            self.calls.add(pipe)
        log.info("call %s: started (audio pipe %d/%d Hz)", pipe.id, input_rate, output_rate)
        return pipe

    # ---------------------------------------------------------------- WebRTC

    async def answer_offer(
        self, sdp: str, options: CallOptions | None = None, *, transport: str = "webrtc"
    ) -> tuple[WebRtcCall, str]:
        """Answer a caller's SDP offer with a new peer connection; returns (call, answer)."""
        with self.calls.reserve(transport):
            call = self._webrtc_call(None, options or CallOptions(), transport)
            pc = call.pc
            call.attach()
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
                await pc.setLocalDescription(await pc.createAnswer())
            except Exception as exc:
                why = _offer_failure(exc)
                await call.close("bad_offer", why)  # ends what its tracks started; counted
                raise OfferError(why) from None
            await self._start_webrtc(call)
        return call, pc.localDescription.sdp

    async def attach_peer_connection(
        self,
        pc: RTCPeerConnection,
        options: CallOptions | None = None,
        *,
        transport: str = "webrtc",
    ) -> WebRtcCall:
        """Bridge a peer connection your program creates and negotiates itself.

        Call it before you create the offer or answer, so the reply track is in the SDP.
        The bridge reads the caller's audio and video tracks, plays the model on an audio
        transceiver, and talks to a data channel labelled ``events`` if one opens.
        Closing the call closes ``pc``.
        """
        with self.calls.reserve(transport):
            call = self._webrtc_call(pc, options or CallOptions(), transport)
            call.attach()
            await self._start_webrtc(call)
        return call

    def _webrtc_call(
        self, pc: RTCPeerConnection | None, options: CallOptions, transport: str
    ) -> WebRtcCall:
        """Options are checked (``ValueError``) before a peer connection is made."""
        track = ReplyTrack(self.settings.profile.output_rate, idle=self.settings.idle_audio)
        conversation = self.conversation(track, options, transport=transport)
        if pc is None:
            pc = RTCPeerConnection(rtc_configuration(self.settings))
        call = WebRtcCall(pc, conversation, track, peer_timeout=self.settings.peer_timeout)
        call.lean_video = lambda: self.load.lean_for(call.id)
        call.light_video = lambda: self.load.light
        return call

    async def _start_webrtc(self, call: WebRtcCall) -> None:
        try:
            await self.start_conversation(call.conversation)
        except RealtimeError:
            await call.close(call.conversation.ended_reason or "upstream_unavailable")
            raise
        call.start()
        self.calls.add(call)
        conversation = call.conversation
        log.info(
            "call %s: started (%s, %s, voice %s, upstream session in %.0f ms)",
            call.id,
            call.transport,
            "push-to-talk" if conversation.manual else "hands-free",
            conversation.session.voice,
            (conversation.client.connect_seconds if conversation.client else 0) * 1000,
        )

    # ---------------------------------------------------------------- HTTP

    def web_app(self, *, page: bool = True) -> web.Application:
        """The bridge's routes as an aiohttp application (the page optional)."""
        from signaling.app import build_app

        return build_app(self, page=page)

    def mount(self, app: web.Application, prefix: str = "/", *, page: bool = True) -> None:
        """Add the bridge's routes to your application under ``prefix`` (e.g. ``/voice/``).

        The bridge starts and closes with ``app``.
        """
        from aiohttp import web

        prefix = "/" + prefix.strip("/")
        if prefix == "/":
            raise ValueError("mount under a prefix such as /voice/, or use web_app() as the app")
        if page:  # the page's relative URLs need the trailing slash (routes match in order)

            async def to_page(request: web.Request) -> web.StreamResponse:
                query = request.rel_url.query_string
                raise web.HTTPPermanentRedirect(prefix + "/" + (f"?{query}" if query else ""))

            app.router.add_get(prefix, to_page)
        app.add_subapp(prefix, self.web_app(page=page))
