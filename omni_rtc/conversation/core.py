"""One conversation: a realtime session and every rule that is not about a wire format.

Caller audio (pcm16 at any rate, or decoded frames) goes up once resampled to the
provider's input rate; camera frames go up as JPEG at <= 2 fps; the model's replies come
back into a transport's :class:`ReplySink` at the rate the sink asks for.  Barge-in,
push-to-talk, transcripts, reply latency, DTMF and session renewal live here once, so
every transport (WebRTC, SIP, WHIP, media streams, a program's own pipe) gets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from typing import Any

import av
from aiortc.mediastreams import MediaStreamTrack

from ..media import DEFAULT_CHUNK_MS
from ..media.frame_sampler import FrameSampler, ImageRefused
from ..media.jpeg import HARD_MAX_BYTES, JpegLimits
from ..metrics import Metrics
from ..realtime.client import RealtimeClient
from ..realtime.profiles import ProviderProfile
from ..realtime.session import SessionConfig
from . import limits as call_limits
from .downlink import Downlink, caught_up_ms
from .events import (
    CallError,
    CallStarted,
    ConversationEvent,
    Dtmf,
    Ended,
    State,
    StateChanged,
    Transcript,
)
from .limits import CallLimits
from .sinks import ReplySink
from .uplink import Uplink
from .upstream import UpstreamEvents

log = logging.getLogger("omni_rtc.call")

FAILED_ENDINGS = frozenset(
    {
        "bad_offer",
        "internal_error",
        "peer_failed",
        "peer_timeout",
        "protocol_error",
        "upstream_auth",
        "upstream_closed",
        "upstream_unavailable",
    }
)
"""Endings counted in ``omni_rtc_calls_failed_total`` and logged at WARNING, once each."""
DTMF_DIGITS = frozenset("0123456789*#ABCD")
MIN_RATE, MAX_RATE = 8000, 192_000

OpenSession = Callable[[SessionConfig], Awaitable[RealtimeClient]]
Listener = Callable[[ConversationEvent], None]


class Conversation:
    """Create, add listeners, then :meth:`start`; :meth:`close` ends it (idempotent).

    ``open_session`` opens a realtime session for the given config (the bridge's, or
    your own); it is called again when a session is lost or hits the service's time
    limit, for up to ``reconnect_seconds``.
    """

    def __init__(
        self,
        *,
        session: SessionConfig,
        profile: ProviderProfile,
        open_session: OpenSession,
        sink: ReplySink,
        metrics: Metrics | None = None,
        executor: Executor | None = None,
        call_id: str | None = None,
        transport: str = "pipe",
        chunk_ms: int = DEFAULT_CHUNK_MS,
        video_fps: float = 2.0,
        jpeg_limits: JpegLimits | None = None,
        limits: CallLimits | None = None,
        reconnect_seconds: float = 20.0,
    ) -> None:
        self.id = call_id or secrets.token_urlsafe(16)
        self.transport = transport
        self.session = session
        self.profile = profile
        self.sink = sink
        self.metrics = metrics or Metrics()
        self.bytes_up = self.metrics.bytes.labels("up")
        self.bytes_down = self.metrics.bytes.labels("down")
        """Label lookups cost more than the increments: done once per call."""
        self.executor = executor
        self.video_fps = video_fps
        self.jpeg_limits = jpeg_limits or JpegLimits()
        self.limits = limits or CallLimits()
        self.reconnect_seconds = reconnect_seconds
        self._open_session = open_session
        self.client: RealtimeClient | None = None
        self.call_started: CallStarted | None = None
        self.state: State = "listening"
        self.stats: dict[str, int] = {"audio_chunks": 0, "images": 0, "barge_ins": 0, "dtmf": 0}
        self.ended_reason: str | None = None
        self.closed = asyncio.Event()
        self.started_at = time.monotonic()
        self.last_activity = self.started_at
        self._listeners: list[Listener] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._closing = False
        self.uplink = Uplink(self, chunk_ms)
        self.downlink = Downlink(self)
        self._upstream = UpstreamEvents(self)
        self._closer: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- properties

    @property
    def manual(self) -> bool:
        """Push-to-talk: audio goes up only while the caller holds the button."""
        return self.session.manual

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def mode(self) -> str:
        return "manual" if self.manual else "server_vad"

    @property
    def input_rate(self) -> int:
        return self.profile.input_rate

    @property
    def output_rate(self) -> int:
        """The rate reply audio is delivered at: the sink's."""
        return self.sink.sample_rate

    # ---------------------------------------------------------------- events out

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every event from now on (synchronously; keep it quick)."""
        self._listeners.append(listener)

    def events(self, limit: int = 1000) -> AsyncIterator[ConversationEvent]:
        """Iterate events until :class:`Ended`. Subscribed after ``start``, the iterator
        first yields the :class:`CallStarted` and the current state, then what follows.

        At most ``limit`` unread events are kept; older streaming transcripts go first.
        """
        queue: deque[ConversationEvent] = deque(maxlen=limit)
        if self.call_started is not None:
            queue.extend((self.call_started, StateChanged(self.state)))
        ready = asyncio.Event()
        ready.set()

        def listener(event: ConversationEvent) -> None:
            queue.append(event)
            ready.set()

        self.add_listener(listener)

        async def iterate() -> AsyncIterator[ConversationEvent]:
            try:
                while True:
                    while not queue:
                        ready.clear()
                        await ready.wait()
                    event = queue.popleft()
                    yield event
                    if isinstance(event, Ended):
                        return
            finally:
                with contextlib.suppress(ValueError):
                    self._listeners.remove(listener)

        return iterate()

    def emit(self, event: ConversationEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("call %s: event listener failed", self.id)

    def set_state(self, value: State, *, force: bool = False) -> None:
        if value != self.state or force:
            self.state = value
            self.emit(StateChanged(value))

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Open the realtime session; raises :class:`RealtimeError` if it cannot."""
        if self._started or self._closing:
            raise RuntimeError("a conversation starts once")
        self.client = await self._open_session(self.session)
        if self.closing:  # closed while the session was opening
            await self._close_client()
            return
        self._started = True
        self.started_at = self.last_activity = time.monotonic()
        self.metrics.calls_total.labels(self.transport).inc()
        self.metrics.calls_active.labels(self.transport).inc()
        self.uplink.ready.set()
        self.spawn(self._upstream.pump(), "upstream")
        self.spawn(self.uplink.run(), "send")
        self.spawn(call_limits.enforce(self, self.limits), "limits")
        self.call_started = CallStarted(
            call_id=self.id,
            mode=self.mode,
            voice=self.session.voice,
            model=self.client.state.session.get("model"),
        )
        self.emit(self.call_started)
        self.set_state("listening", force=True)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run a task the conversation owns: cancelled at close, a failure ends the call."""
        if self._closing:
            coro.close()
            return
        task = asyncio.create_task(coro, name=f"call-{self.id}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        log.error("call %s: task %s failed: %r", self.id, task.get_name(), task.exception())
        if not self._closing:
            self._closer = asyncio.create_task(self.close("internal_error"))

    async def close(self, reason: str = "hangup", detail: str = "") -> None:
        """End the conversation and its realtime session; safe to call many times.

        ``detail`` (why, in words) goes into the one log line that ends the call.
        """
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        self.ended_reason = reason
        self.emit(Ended(reason))
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await self.uplink.stop()
        self.sink.flush()
        self.downlink.release()  # filter graphs go now, not at the next GC
        await self._close_client()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        self._finish(reason, detail)
        self.closed.set()

    async def _close_client(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.close(), 2)

    def _finish(self, reason: str, detail: str) -> None:
        self.downlink.report_underruns()
        duration = time.monotonic() - self.started_at
        if reason in FAILED_ENDINGS:
            self.metrics.calls_failed.labels(self.transport, reason).inc()
        if self._started:
            self.metrics.calls_active.labels(self.transport).dec()
            self.metrics.calls_ended.labels(self.transport, reason).inc()
            self.metrics.call_duration.observe(duration)
        played_ms = self.stats.get("reply_ms", 0)
        log.log(
            logging.WARNING if reason in FAILED_ENDINGS else logging.INFO,
            "call %s: ended (%s%s) after %.1f s: %d audio chunks and %d images up, "
            "%d barge-ins, %d DTMF digits, %d ms of reply, %d underruns, "
            "%d ms of pauses skipped to catch up",
            self.id,
            reason,
            f": {detail}" if detail else "",
            duration,
            self.stats["audio_chunks"],
            self.stats["images"],
            self.stats["barge_ins"],
            self.stats["dtmf"],
            played_ms,
            self.sink.underruns,
            caught_up_ms(self.sink),
        )

    # ---------------------------------------------------------------- caller -> model

    def push_frame(self, frame: av.AudioFrame) -> None:
        """Caller audio as a decoded frame (any rate, layout or sample format)."""
        self.uplink.push_frame(frame)

    def push_audio(self, pcm: bytes, rate: int) -> None:
        """Caller audio as pcm16 mono little-endian at ``rate`` (8 kHz to 192 kHz)."""
        if not MIN_RATE <= rate <= MAX_RATE:
            raise ValueError(f"audio rate must be {MIN_RATE}..{MAX_RATE} Hz, got {rate}")
        if len(pcm) < 2:
            return
        self.uplink.push_pcm(pcm, rate)

    def watch_video(self, track: MediaStreamTrack) -> None:
        """Sample a camera track into JPEGs at <= ``video_fps`` (or just drain it)."""
        self.uplink.watch_video(track)

    def video_input(self) -> FrameSampler | None:
        """Sample decoded camera frames handed in with ``offer`` (None: video is off)."""
        return self.uplink.video_input()

    async def send_image(self, jpeg: bytes) -> bool:
        """Send one JPEG now; False when the service would refuse it (no audio yet, or
        not a JPEG within the service's size limit: then a :class:`CallError` says why)."""
        if not (jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9"):
            self.emit(CallError("that image is not a JPEG"))
            return False
        if len(jpeg) > HARD_MAX_BYTES:
            self.emit(CallError(f"that image is over {HARD_MAX_BYTES} bytes"))
            return False
        try:
            await self.uplink.send_image(jpeg)
        except ImageRefused:
            return False
        return True

    def push_to_talk(self, pressed: bool) -> bool:
        """The caller pressed or released the talk button; False (and an error) if hands-free."""
        if not self.manual:
            self.emit(CallError("push-to-talk is off: this call is hands-free"))
            return False
        self.uplink.queue_control(self.uplink.ptt_start if pressed else self.uplink.ptt_stop)
        return True

    def activity(self) -> None:
        """Someone spoke: the idle limit starts again."""
        self.last_activity = time.monotonic()

    def dtmf(self, digit: str, duration_ms: int = 0) -> None:
        """The caller pressed a key: logged, counted and handed to listeners."""
        digit = digit.upper()
        if digit not in DTMF_DIGITS:
            log.info("call %s: ignoring unknown DTMF event %r", self.id, digit)
            return
        self.stats["dtmf"] += 1
        self.activity()
        self.metrics.dtmf_digits.labels(self.transport).inc()
        log.info("call %s: DTMF %s (%d ms)", self.id, digit, duration_ms)
        self.emit(Dtmf(digit, duration_ms))

    # ---------------------------------------------------------------- model -> caller

    async def barge_in(self) -> None:
        """The caller talks over the reply: silence it now, then stop it upstream."""
        await self.downlink.barge_in()

    def ignore_current_response(self) -> None:
        """The interrupted reply's audio may still be in flight: drop it when it comes."""
        self._upstream.ignore_current_response()

    # ---------------------------------------------------------------- upstream sessions

    async def open_session_for_call(self) -> RealtimeClient:
        return await self._open_session(self.session)

    async def swap_client(self, client: RealtimeClient) -> None:
        """A replacement session is open: use it from now on (closed calls close it)."""
        if self._closing:
            await client.close()
            return
        old, self.client = self.client, client
        if old is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.close(), 1)

    def report_transcript(self, role: str, text: str, final: bool) -> None:
        self.emit(Transcript("user" if role == "user" else "assistant", text, final))
