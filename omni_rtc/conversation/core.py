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

from ..media.audio_in import AudioIn
from ..media.frame_sampler import FrameSampler, ImageRefused
from ..media.jpeg import JpegEncoder, JpegLimits
from ..media.pcm_resampler import PcmResampler
from ..metrics import Metrics
from ..realtime.client import RealtimeClient
from ..realtime.errors import RealtimeError
from ..realtime.profiles import ProviderProfile
from ..realtime.session import SessionConfig
from .events import (
    CallError,
    CallStarted,
    ConversationEvent,
    Dtmf,
    Ended,
    Interrupted,
    Notice,
    State,
    StateChanged,
    Transcript,
)
from .sinks import ReplySink
from .upstream import UpstreamEvents

log = logging.getLogger("omni_rtc.call")

MIN_PTT_MS = 200
"""Shorter push-to-talk presses are dropped: the service refuses tiny buffers."""
MAX_BACKLOG_S = 5.0
"""Caller audio held while the upstream socket is slow; older audio is dropped."""
FAILED_ENDINGS = frozenset({"peer_failed", "peer_timeout", "internal_error", "upstream_closed"})
DTMF_DIGITS = frozenset("0123456789*#ABCD")

OpenSession = Callable[[SessionConfig], Awaitable[RealtimeClient]]
Listener = Callable[[ConversationEvent], None]
_Control = Callable[[], Awaitable[None]]


class Conversation:
    """Create, add listeners, then :meth:`start`; :meth:`close` ends it (idempotent).

    ``open_session`` opens a realtime session for the given config (the bridge's, or
    your own); it is called again when the service ends a session at a time limit.
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
        chunk_ms: int = 20,
        video_fps: float = 2.0,
        jpeg_limits: JpegLimits | None = None,
    ) -> None:
        self.id = call_id or secrets.token_urlsafe(16)
        self.transport = transport
        self.session = session
        self.profile = profile
        self.sink = sink
        self.metrics = metrics or Metrics()
        self.executor = executor
        self.video_fps = video_fps
        self.jpeg_limits = jpeg_limits or JpegLimits()
        self._open_session = open_session
        self._audio_in = AudioIn(profile.input_rate, chunk_ms)
        self._reply_resampler = PcmResampler(profile.output_rate, sink.sample_rate)
        sink.on_drained = self._reply_drained
        self.client: RealtimeClient | None = None
        self.state: State = "listening"
        self.stats: dict[str, int] = {"audio_chunks": 0, "images": 0, "barge_ins": 0, "dtmf": 0}
        self.ended_reason: str | None = None
        self.closed = asyncio.Event()
        self.started_at = time.monotonic()
        self._listeners: list[Listener] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outgoing: deque[bytes | _Control] = deque()
        self._outgoing_ready = asyncio.Event()
        self._max_backlog = int(MAX_BACKLOG_S * 1000 / chunk_ms)
        self._samplers: list[FrameSampler] = []
        self._started = False
        self._closing = False
        self._ptt_active = False
        self._ptt_ms = 0.0
        self._turn_ended_at: float | None = None
        self._underruns_reported = 0
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
        """Iterate events from now on until :class:`Ended` (subscribe before ``start``).

        At most ``limit`` unread events are kept; older streaming transcripts go first.
        """
        queue: deque[ConversationEvent] = deque(maxlen=limit)
        ready = asyncio.Event()

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
        self.started_at = time.monotonic()
        self.metrics.calls_total.labels(self.transport).inc()
        self.metrics.calls_active.labels(self.transport).inc()
        self.spawn(self._upstream.pump(), "upstream")
        self.spawn(self._send_outgoing(), "send")
        self.emit(
            CallStarted(
                call_id=self.id,
                mode=self.mode,
                voice=self.session.voice,
                model=self.client.state.session.get("model"),
            )
        )
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

    async def close(self, reason: str = "hangup") -> None:
        """End the conversation and its realtime session; safe to call many times."""
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
        for sampler in self._samplers:
            await sampler.stop()
        self.sink.flush()
        self._outgoing.clear()
        await self._close_client()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        self._finish(reason)
        self.closed.set()

    async def _close_client(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.close(), 2)

    def _finish(self, reason: str) -> None:
        self._report_underruns()
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
            "call %s: ended (%s) after %.1f s: %d audio chunks and %d images up, "
            "%d barge-ins, %d DTMF digits, %d ms of reply, %d underruns",
            self.id,
            reason,
            duration,
            self.stats["audio_chunks"],
            self.stats["images"],
            self.stats["barge_ins"],
            self.stats["dtmf"],
            played_ms,
            self.sink.underruns,
        )

    # ---------------------------------------------------------------- caller -> model

    def push_frame(self, frame: av.AudioFrame) -> None:
        """Caller audio as a decoded frame (any rate, layout or sample format)."""
        self._queue_audio(self._audio_in.push(frame))

    def push_audio(self, pcm: bytes, rate: int) -> None:
        """Caller audio as pcm16 mono little-endian at ``rate`` (any rate)."""
        if len(pcm) < 2:
            return
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
        frame.planes[0].update(pcm[: len(pcm) // 2 * 2])
        frame.sample_rate = rate
        self.push_frame(frame)

    def _queue_audio(self, chunks: list[bytes]) -> None:
        if not chunks or self._closing or (self.manual and not self._ptt_active):
            return
        for chunk in chunks:
            self._outgoing.append(chunk)
        if len(self._outgoing) > self._max_backlog:
            self._drop_oldest_audio()
        self._outgoing_ready.set()

    def _drop_oldest_audio(self) -> None:
        kept: deque[bytes | _Control] = deque()
        excess = len(self._outgoing) - self._max_backlog
        for item in self._outgoing:
            if excess > 0 and isinstance(item, bytes):
                excess -= 1
                continue
            kept.append(item)
        self._outgoing = kept
        log.warning(
            "call %s: upstream is slow; dropped caller audio older than %.0f s",
            self.id,
            MAX_BACKLOG_S,
        )

    def _queue_control(self, action: _Control) -> None:
        """Run ``action`` after the audio queued before it (push-to-talk needs order)."""
        self._outgoing.append(action)
        self._outgoing_ready.set()

    async def _send_outgoing(self) -> None:
        while True:
            while not self._outgoing:
                self._outgoing_ready.clear()
                await self._outgoing_ready.wait()
            item = self._outgoing.popleft()
            if isinstance(item, bytes):
                await self._append_audio(item)
            else:
                await item()

    async def _append_audio(self, chunk: bytes) -> None:
        if self.client is None:
            return
        try:
            await self.client.append_audio(chunk)
        except RealtimeError:
            return  # the upstream pump reports the closed session
        self.stats["audio_chunks"] += 1
        self.metrics.bytes.labels("up").inc(len(chunk))
        if self.manual:
            self._ptt_ms += len(chunk) / 2 * 1000 / self.input_rate

    def watch_video(self, track: MediaStreamTrack) -> None:
        """Sample a camera track into JPEGs at <= ``video_fps`` (or just drain it)."""
        if self.video_fps <= 0:
            self.spawn(_drain(track), "video-drain")
            return
        sampler = FrameSampler(
            track,
            fps=self.video_fps,
            encoder=JpegEncoder(self.jpeg_limits),
            can_send=lambda: self.client is not None and self.client.state.audio_in_buffer,
            send=self._send_image,
            executor=self.executor,
        )
        self._samplers.append(sampler)
        sampler.start()

    async def send_image(self, jpeg: bytes) -> bool:
        """Send one JPEG now; False when the service would refuse it (no audio yet)."""
        try:
            await self._send_image(jpeg)
        except ImageRefused:
            return False
        return True

    async def _send_image(self, jpeg: bytes) -> None:
        if self.client is None or self._closing:
            raise ImageRefused
        try:
            await self.client.append_image(jpeg)
        except RealtimeError:  # no audio in the buffer yet (ImageBeforeAudio), or closed
            raise ImageRefused from None
        self.stats["images"] += 1
        self.metrics.images_sent.inc()
        self.metrics.bytes.labels("up").inc(len(jpeg))

    def push_to_talk(self, pressed: bool) -> bool:
        """The caller pressed or released the talk button; False (and an error) if hands-free."""
        if not self.manual:
            self.emit(CallError("push-to-talk is off: this call is hands-free"))
            return False
        self._queue_control(self._ptt_start if pressed else self._ptt_stop)
        return True

    async def _ptt_start(self) -> None:
        if self._ptt_active or self.client is None:
            return
        if self.sink.playing or self.client.state.response_active:
            await self.barge_in()
        self._audio_in.flush()
        await self.client.clear()
        self._ptt_ms = 0.0
        self._ptt_active = True
        self.set_state("listening")

    async def _ptt_stop(self) -> None:
        if not self._ptt_active or self.client is None:
            return
        self._ptt_active = False
        rest = self._audio_in.flush()
        if rest:
            await self._append_audio(rest)
        if self._ptt_ms < MIN_PTT_MS:
            await self.client.clear()
            self.emit(CallError("Too short: hold the button while you speak."))
            return
        self.turn_ended()
        await self.client.commit()
        await self.client.create_response()
        self.set_state("thinking")

    def dtmf(self, digit: str, duration_ms: int = 0) -> None:
        """The caller pressed a key: logged, counted and handed to listeners."""
        digit = digit.upper()
        if digit not in DTMF_DIGITS:
            log.info("call %s: ignoring unknown DTMF event %r", self.id, digit)
            return
        self.stats["dtmf"] += 1
        self.metrics.dtmf_digits.labels(self.transport).inc()
        log.info("call %s: DTMF %s (%d ms)", self.id, digit, duration_ms)
        self.emit(Dtmf(digit, duration_ms))

    # ---------------------------------------------------------------- model -> caller

    def turn_ended(self) -> None:
        """The caller finished a turn: reply latency is measured from here."""
        self._turn_ended_at = time.monotonic()

    def play(self, pcm: bytes) -> None:
        """Reply audio at the provider's output rate -> the sink, at the sink's rate."""
        if not self.sink.playing and self._turn_ended_at is not None:
            self.metrics.reply_latency.observe(time.monotonic() - self._turn_ended_at)
            self._turn_ended_at = None
        self.sink.push(self._reply_resampler.convert(pcm))
        self.stats["reply_ms"] = self.stats.get("reply_ms", 0) + len(pcm) * 500 // (
            self.profile.output_rate
        )
        self.metrics.bytes.labels("down").inc(len(pcm))
        if self.state != "speaking":
            self.set_state("speaking")

    def end_of_reply(self) -> None:
        rest = self._reply_resampler.drain()
        if rest:
            self.sink.push(rest)
        self.sink.end_of_reply()

    async def barge_in(self) -> None:
        """The caller talks over the reply: silence it now, then stop it upstream."""
        dropped = self.sink.flush()
        self._reply_resampler.reset()
        played_ms = self.sink.reply_samples_played * 1000 // self.sink.sample_rate
        self._upstream.ignore_current_response()
        self.stats["barge_ins"] += 1
        self.metrics.barge_ins.inc()
        self.emit(Interrupted())
        log.info("call %s: barge-in, dropped %d ms of queued reply", self.id, dropped)
        if self.client is not None:
            with contextlib.suppress(RealtimeError):
                await self.client.barge_in(played_ms)

    def _reply_drained(self) -> None:
        self._report_underruns()
        response_active = self.client is not None and self.client.state.response_active
        if not response_active and self.state == "speaking":
            self.set_state("listening")

    def _report_underruns(self) -> None:
        new = self.sink.underruns - self._underruns_reported
        if new > 0:
            self.metrics.reply_underruns.inc(new)
            self._underruns_reported += new

    # ---------------------------------------------------------------- upstream sessions

    async def renew_session(self) -> bool:
        """The service closed the session at a time limit: open a new one, keep the call."""
        try:
            client = await self._open_session(self.session)
        except RealtimeError as exc:
            log.warning("call %s: could not renew the model session: %s", self.id, str(exc))
            return False
        if self._closing:
            await client.close()
            return False
        old, self.client = self.client, client
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        self.sink.flush()
        self._reply_resampler.reset()
        self._turn_ended_at = None
        self.metrics.upstream_rollovers.inc()
        log.info("call %s: model session renewed after a session time limit", self.id)
        self.emit(
            Notice(
                "The model session reached its time limit and was renewed; "
                "it does not remember the conversation so far."
            )
        )
        self.set_state("listening")
        return True

    def report_error(self, message: str) -> None:
        self.emit(CallError(message))

    def report_transcript(self, role: str, text: str, final: bool) -> None:
        self.emit(Transcript("user" if role == "user" else "assistant", text, final))

    def reply_done(self) -> None:
        self.end_of_reply()
        self._report_underruns()
        if not self.sink.playing and self.state != "listening":
            self.set_state("listening")


async def _drain(track: MediaStreamTrack) -> None:
    """Read and drop a track we don't use (unread aiortc tracks queue every frame)."""
    with contextlib.suppress(Exception):
        while True:
            await track.recv()
