"""One call: a WebRTC peer connection wired to one realtime session.

The call owns every task it starts and ends them all, with the upstream socket, the
tracks and the peer connection, whichever side ends first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .media.audio_in import AudioIn
from .media.frame_sampler import FrameSampler, ImageRefused
from .media.jpeg import JpegEncoder, JpegLimits
from .media.reply_track import ReplyTrack
from .metrics import Metrics
from .realtime import events as ev
from .realtime.client import RealtimeClient
from .realtime.errors import RealtimeError, UpstreamClosed
from .realtime.session import SessionConfig

log = logging.getLogger("omni_rtc.call")

MAX_PEER_MESSAGE_BYTES = 4096
MIN_PTT_MS = 200
"""Shorter push-to-talk presses are dropped: the service refuses tiny buffers."""
OUTBOX_LIMIT = 200


class Call:
    """Create with :meth:`start` after the peer connection has its remote description."""

    def __init__(
        self,
        *,
        call_id: str,
        pc: RTCPeerConnection,
        client: RealtimeClient,
        session: SessionConfig,
        metrics: Metrics,
        executor: Executor | None,
        chunk_ms: int = 20,
        video_fps: float = 2.0,
        jpeg_limits: JpegLimits | None = None,
        idle_audio: str = "silence",
        peer_timeout: float = 30.0,
        on_closed: Callable[[Call], None] | None = None,
        reconnect: Callable[[], Awaitable[RealtimeClient]] | None = None,
    ) -> None:
        self.id = call_id
        self.pc = pc
        self.client = client
        self.session = session
        self.metrics = metrics
        self.executor = executor
        self.manual = session.manual
        self.profile = client.profile
        self.audio_in = AudioIn(self.profile.input_rate, chunk_ms)
        self.reply_track = ReplyTrack(self.profile.output_rate, idle=idle_audio)
        self.reply_track.on_drained = self._reply_drained
        self.video_fps = video_fps
        self.jpeg_limits = jpeg_limits or JpegLimits()
        self.peer_timeout = peer_timeout
        self.on_closed = on_closed
        self.reconnect = reconnect
        self._session_limit_hit = False
        self.started = time.monotonic()
        self.state = "listening"
        self._state_sent = False
        self.ended_reason: str | None = None
        self.closed = asyncio.Event()
        self._closing = False
        self._started = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sampler: FrameSampler | None = None
        self._channel: RTCDataChannel | None = None
        self._outbox: deque[str] = deque(maxlen=OUTBOX_LIMIT)
        self._ptt_active = False
        self._ptt_ms = 0.0
        self._turn_ended_at: float | None = None
        self._ignored_responses: set[str] = set()
        self._current_response: str | None = None
        self._assistant_text = ""
        self._underruns_reported = 0
        self.stats: dict[str, int] = {"audio_chunks": 0, "images": 0, "barge_ins": 0}

    # ---------------------------------------------------------------- wiring

    def attach(self) -> None:
        """Register peer-connection handlers and the reply track (before the answer)."""
        pc = self.pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                self._spawn(self._pump_caller_audio(track), "caller-audio")
            elif track.kind == "video":
                self._start_video(track)

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label != "events":
                log.info("call %s: ignoring data channel %r", self.id, channel.label)
                return
            self._channel = channel
            channel.on("message", self._on_peer_message)
            channel.on("open", self._flush_outbox)
            if channel.readyState == "open":
                self._flush_outbox()

        @pc.on("connectionstatechange")
        def on_state() -> None:
            # aiortc has no "disconnected" state: a vanished peer shows as "failed" once
            # ICE consent expires.
            state = pc.connectionState
            log.info("call %s: peer connection %s", self.id, state)
            if state == "failed":
                self._spawn(self.close("peer_failed"), "close")
            elif state == "closed":
                self._spawn(self.close("peer_closed"), "close")

    def after_remote_description(self) -> None:
        """Send our reply on the caller's audio transceiver; lower uplink buffering."""
        self.pc.addTrack(self.reply_track)
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "audio":
                _low_latency_audio_receiver(transceiver.receiver)

    def start(self) -> None:
        self._started = True
        self._spawn(self._pump_upstream(), "upstream")
        if not any(
            t.kind == "audio" and t.currentDirection in ("sendrecv", "sendonly")
            for t in self.pc.getTransceivers()
        ):  # a send-only caller (WHIP): play replies into nothing, turn-taking unchanged
            self._spawn(_drain(self.reply_track), "reply-sink")
        self._spawn(self._watch_peer_connects(), "peer-timeout")
        self.metrics.calls_total.inc()
        self.metrics.calls_active.inc()
        self.send_peer(
            {
                "type": "call",
                "call_id": self.id,
                "mode": "manual" if self.manual else "server_vad",
                "voice": self.session.voice,
                "model": self.client.state.session.get("model"),
            }
        )
        self._set_state("listening")

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        if self._closing and name != "close":
            coro.close()
            return
        task = asyncio.create_task(coro, name=f"call-{self.id}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("call %s: task %s failed: %s", self.id, task.get_name(), repr(exc))
            self._spawn(self.close("internal_error"), "close")

    # ---------------------------------------------------------------- peer -> upstream

    async def _pump_caller_audio(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            chunks = self.audio_in.push(frame)  # type: ignore[arg-type]
            if self.manual and not self._ptt_active:
                continue
            for chunk in chunks:
                await self._append_audio(chunk)

    async def _append_audio(self, chunk: bytes) -> None:
        try:
            await self.client.append_audio(chunk)
        except RealtimeError:
            return  # the upstream pump reports the closed session
        self.stats["audio_chunks"] += 1
        self.metrics.bytes.labels("up").inc(len(chunk))
        if self.manual:
            self._ptt_ms += len(chunk) / 2 * 1000 / self.profile.input_rate

    def _start_video(self, track: MediaStreamTrack) -> None:
        if self.video_fps <= 0:
            self._spawn(_drain(track), "video-drain")
            return
        self._sampler = FrameSampler(
            track,
            fps=self.video_fps,
            encoder=JpegEncoder(self.jpeg_limits),
            can_send=lambda: self.client.state.audio_in_buffer,
            send=self._send_image,
            executor=self.executor,
        )
        self._sampler.start()

    async def _send_image(self, jpeg: bytes) -> None:
        try:
            await self.client.append_image(jpeg)
        except RealtimeError:  # no audio in the buffer yet (ImageBeforeAudio), or closed
            raise ImageRefused from None
        self.stats["images"] += 1
        self.metrics.images_sent.inc()
        self.metrics.bytes.labels("up").inc(len(jpeg))

    def _on_peer_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes) or len(message) > MAX_PEER_MESSAGE_BYTES:
            self.send_peer({"type": "error", "message": "messages must be short JSON text"})
            return
        try:
            data = json.loads(message)
        except json.JSONDecodeError:
            self.send_peer({"type": "error", "message": "message is not JSON"})
            return
        if not isinstance(data, dict) or data.get("type") != "ptt":
            self.send_peer({"type": "error", "message": "unknown message; expected {type: ptt}"})
            return
        action = data.get("action")
        if action not in ("start", "stop"):
            self.send_peer({"type": "error", "message": "ptt action must be start or stop"})
            return
        if not self.manual:
            self.send_peer(
                {"type": "error", "message": "push-to-talk is off: this call is hands-free"}
            )
            return
        self._spawn(self._ptt(action), f"ptt-{action}")

    async def _ptt(self, action: str) -> None:
        if action == "start":
            if self._ptt_active:
                return
            if self.reply_track.playing or self.client.state.response_active:
                await self._barge_in()
            self.audio_in.flush()
            await self.client.clear()
            self._ptt_ms = 0.0
            self._ptt_active = True
            self._set_state("listening")
            return
        if not self._ptt_active:
            return
        self._ptt_active = False
        rest = self.audio_in.flush()
        if rest:
            await self._append_audio(rest)
        if self._ptt_ms < MIN_PTT_MS:
            await self.client.clear()
            self.send_peer(
                {"type": "error", "message": "Too short: hold the button while you speak."}
            )
            return
        self._turn_ended_at = time.monotonic()
        await self.client.commit()
        await self.client.create_response()
        self._set_state("thinking")

    # ---------------------------------------------------------------- upstream -> peer

    async def _pump_upstream(self) -> None:
        while True:
            try:
                async for event in self.client:
                    await self._on_upstream(event)
                return  # we closed it
            except UpstreamClosed as exc:
                if self._session_limit_hit and await self._renew_session():
                    continue
                await self._upstream_lost(exc)
                return

    async def _renew_session(self) -> bool:
        """The service closed the session at a time limit: open a new one, keep the call."""
        assert self.reconnect is not None
        self._session_limit_hit = False
        try:
            client = await self.reconnect()
        except RealtimeError as exc:
            log.warning("call %s: could not renew the model session: %s", self.id, str(exc))
            return False
        self.client = client
        self.reply_track.flush()
        self._ignored_responses.clear()
        self._current_response = None
        self._turn_ended_at = None
        self.metrics.upstream_rollovers.inc()
        log.info("call %s: model session renewed after a session time limit", self.id)
        self.send_peer(
            {
                "type": "notice",
                "message": "The model session reached its time limit and was renewed; "
                "it does not remember the conversation so far.",
            }
        )
        self._set_state("listening")
        return True

    async def _upstream_lost(self, exc: UpstreamClosed) -> None:
        log.warning("call %s: upstream closed: %s", self.id, str(exc))
        reason = exc.reason or "connection lost"
        self.send_peer(
            {"type": "error", "message": f"The model service ended the session: {reason}"}
        )
        self.metrics.calls_failed.labels("upstream_closed").inc()
        await self.close("upstream_closed")

    async def _on_upstream(self, event: ev.ServerEvent) -> None:
        if isinstance(event, ev.AudioDelta):
            self._on_audio_delta(event)
        elif isinstance(event, ev.SpeechStarted):
            if self.reply_track.playing or self.client.state.response_active:
                await self._barge_in()
            self._set_state("listening")
        elif isinstance(event, ev.SpeechStopped):
            self._turn_ended_at = time.monotonic()
            self._set_state("thinking")
        elif isinstance(event, ev.InputTranscriptionCompleted):
            self.send_peer(
                {"type": "transcript", "role": "user", "text": event.transcript, "final": True}
            )
        elif isinstance(event, ev.ResponseCreated):
            self._current_response = event.response_id
            self._assistant_text = ""
            self.reply_track.new_reply()
        elif isinstance(event, (ev.AudioTranscriptDelta, ev.TextDelta)):
            if event.response_id not in self._ignored_responses:
                self._assistant_text += event.delta
                self.send_peer(
                    {
                        "type": "transcript",
                        "role": "assistant",
                        "text": self._assistant_text,
                        "final": False,
                    }
                )
        elif isinstance(event, (ev.AudioTranscriptDone, ev.TextDone)):
            if event.response_id not in self._ignored_responses:
                text = event.transcript if isinstance(event, ev.AudioTranscriptDone) else event.text
                self.send_peer(
                    {"type": "transcript", "role": "assistant", "text": text, "final": True}
                )
        elif isinstance(event, ev.AudioDone):
            self.reply_track.end_of_reply()
        elif isinstance(event, ev.ResponseDone):
            self._on_response_done(event)
        elif isinstance(event, ev.ErrorEvent):
            self._on_upstream_error(event)

    def _on_audio_delta(self, event: ev.AudioDelta) -> None:
        if event.response_id in self._ignored_responses:
            return  # audio of a reply the caller interrupted, still in flight
        if not self.reply_track.playing and self._turn_ended_at is not None:
            self.metrics.reply_latency.observe(time.monotonic() - self._turn_ended_at)
            self._turn_ended_at = None
        self.reply_track.push(event.delta)
        self.metrics.bytes.labels("down").inc(len(event.delta))
        if self.state != "speaking":
            self._set_state("speaking")

    def _on_response_done(self, event: ev.ResponseDone) -> None:
        self.reply_track.end_of_reply()
        self._report_underruns()
        if event.status == "failed":
            details = event.response.get("status_details") or {}
            reason = details.get("error", {}).get("message") if isinstance(details, dict) else None
            self.send_peer({"type": "error", "message": f"The reply failed: {reason or 'unknown'}"})
        if not self.reply_track.playing and self.state != "listening":
            self._set_state("listening")

    def _on_upstream_error(self, event: ev.ErrorEvent) -> None:
        if self.reconnect is not None and any(
            fragment in event.message for fragment in self.profile.session_limit_errors
        ):
            self._session_limit_hit = True  # the close that follows renews the session
            log.info("call %s: model session limit: %s", self.id, event.message)
            return
        if event.message in self.profile.benign_errors:
            log.debug("call %s: expected upstream error: %s", self.id, event.message)
            return
        self.metrics.upstream_errors.inc()
        log.warning("call %s: upstream error: %s", self.id, event.message)
        self.send_peer({"type": "error", "message": f"Model service: {event.message}"})

    def _reply_drained(self) -> None:
        self._report_underruns()
        if not self.client.state.response_active and self.state == "speaking":
            self._set_state("listening")

    def _report_underruns(self) -> None:
        new = self.reply_track.stats.underruns - self._underruns_reported
        if new > 0:
            self.metrics.reply_underruns.inc(new)
            self._underruns_reported += new

    async def _barge_in(self) -> None:
        """The caller talks over the reply: silence it now, then stop it upstream."""
        dropped = self.reply_track.flush()
        played_ms = self.reply_track.reply_samples_played * 1000 // self.profile.output_rate
        if self._current_response:
            self._ignored_responses.add(self._current_response)
        self.stats["barge_ins"] += 1
        self.metrics.barge_ins.inc()
        self.send_peer({"type": "interrupted"})
        log.info("call %s: barge-in, dropped %d ms of queued reply", self.id, dropped)
        with contextlib.suppress(RealtimeError):
            await self.client.barge_in(played_ms)

    # ---------------------------------------------------------------- peer messages

    def _set_state(self, value: str) -> None:
        if value != self.state or not self._state_sent:
            self.state = value
            self._state_sent = True
            self.send_peer({"type": "state", "value": value})

    def _channel_usable(self) -> bool:
        channel = self._channel
        # aiortc fails in a background task when sending over a dead transport
        return (
            channel is not None
            and channel.readyState == "open"
            and self.pc.connectionState == "connected"
        )

    def send_peer(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, ensure_ascii=False)
        if self._channel_usable():
            assert self._channel is not None
            self._channel.send(text)
        elif not self._closing:
            self._outbox.append(text)

    def _flush_outbox(self) -> None:
        while self._outbox and self._channel_usable():
            assert self._channel is not None
            self._channel.send(self._outbox.popleft())

    async def _drain_channel(self, timeout: float = 0.5) -> None:
        """Let the last messages (why the call ended) leave before the connection closes."""
        channel = self._channel
        if channel is not None and self._channel_usable() and channel.bufferedAmount > 0:
            drained = asyncio.Event()
            channel.once("bufferedamountlow", drained.set)  # fires when it drops to 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drained.wait(), timeout)
        await asyncio.sleep(0)

    # ---------------------------------------------------------------- lifecycle

    async def _watch_peer_connects(self) -> None:
        await asyncio.sleep(self.peer_timeout)
        if self.pc.connectionState != "connected":
            log.warning("call %s: peer did not connect within %.0f s", self.id, self.peer_timeout)
            self.metrics.calls_failed.labels("peer_timeout").inc()
            await self.close("peer_timeout")

    async def close(self, reason: str) -> None:
        """End the call; safe to call many times and from any task."""
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        self.ended_reason = reason
        if reason in ("peer_failed", "internal_error"):
            self.metrics.calls_failed.labels(reason).inc()
        self.send_peer({"type": "ended", "reason": reason})
        await self._drain_channel()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if self._sampler is not None:
            await self._sampler.stop()
        self.reply_track.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.close(), 2)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 2)
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        self._report_underruns()
        duration = time.monotonic() - self.started
        if self._started:
            self.metrics.calls_active.dec()
            self.metrics.calls_ended.labels(reason).inc()
            self.metrics.call_duration.observe(duration)
        log.info(
            "call %s: ended (%s) after %.1f s: %d audio chunks and %d images up, %d barge-ins, "
            "%d reply frames, %d underruns",
            self.id,
            reason,
            duration,
            self.stats["audio_chunks"],
            self.stats["images"],
            self.stats["barge_ins"],
            self.reply_track.stats.reply_frames,
            self.reply_track.stats.underruns,
        )
        self.closed.set()
        if self.on_closed is not None:
            self.on_closed(self)


async def _drain(track: MediaStreamTrack) -> None:
    """Read and drop a track we don't use (unread aiortc tracks queue every frame)."""
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


def _low_latency_audio_receiver(receiver: Any) -> None:
    """Release caller audio after 1 frame instead of aiortc's 4 (~60 ms less uplink delay).

    aiortc's audio jitter buffer holds frames for playout smoothing; the model is not
    a speaker and needs no smoothing, only order.
    """
    attribute = "_RTCRtpReceiver__jitter_buffer"
    current = getattr(receiver, attribute, None)
    if isinstance(current, JitterBuffer):
        setattr(receiver, attribute, JitterBuffer(capacity=current.capacity, prefetch=1))
    else:
        log.debug("aiortc receiver layout changed; keeping its default jitter buffer")
