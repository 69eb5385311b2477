"""WebRTC transport: an aiortc peer connection adapted to a :class:`Conversation`.

Tracks in -> the conversation (audio frames, camera frames); the conversation's reply
-> a paced :class:`ReplyTrack` on the caller's audio transceiver; conversation events
<-> the page's ``events`` data channel.  No conversation rule lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import av
from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from ..conversation.core import Conversation
from ..conversation.events import ConversationEvent, Ended
from ..media.audio_decode import CallerAudioDecoder
from ..media.reply_track import OpusReplyTrack, ReplyTrack
from ..media.video_gate import VideoDecoder
from . import aiortc_fastpath as fastpath
from . import aiortc_reply_sender
from .aiortc_inbound import InlineReceiver, receive_inline

log = logging.getLogger("omni_rtc.call")

EVENTS_CHANNEL = "events"
MAX_PEER_MESSAGE_BYTES = 4096
MAX_PEER_MESSAGE_DEPTH = 4
OUTBOX_LIMIT = 200
PEER_SILENCE_S = 5.0
"""A connected peer that sends neither audio nor messages this long has vanished
(aioice's consent check would take 30 s to say so)."""


class WebRtcCall:
    """One peer connection bridged to one conversation; ends both, whichever ends first.

    Build it around a conversation whose sink is ``reply_track``, call :meth:`attach`
    before the local description (offer or answer) is created, start the conversation,
    then :meth:`start`.
    """

    def __init__(
        self,
        pc: RTCPeerConnection,
        conversation: Conversation,
        reply_track: ReplyTrack,
        *,
        peer_timeout: float = 30.0,
        on_closed: Callable[[WebRtcCall], None] | None = None,
        lean_video: Callable[[], bool] = lambda: False,
        light_video: Callable[[], bool] = lambda: False,
    ) -> None:
        self.pc = pc
        self.conversation = conversation
        self.reply_track = reply_track
        self.peer_timeout = peer_timeout
        self.on_closed = on_closed
        self.lean_video = lean_video
        """True while this call's cameras are decoded at key frames only (the process is
        overloaded)."""
        self.light_video = light_video
        """True while cameras are decoded without the loop filter (the process is busy)."""
        self.closed = asyncio.Event()
        self.ended_reason: str | None = None
        self._closing = False
        self._closer: asyncio.Task[None] | None = None
        self._channel: RTCDataChannel | None = None
        self._outbox: deque[str] = deque(maxlen=OUTBOX_LIMIT)
        self._tracks_seen: set[MediaStreamTrack] = set()
        self._opus_track: OpusReplyTrack | None = None
        self._clocked_reply: aiortc_reply_sender.ClockedReply | None = None
        self.video_decoders: list[VideoDecoder] = []
        self._reply_added = False
        self._reply_checked = False
        self._inline: dict[Any, InlineReceiver | None] = {}
        self._last_heard = time.monotonic()
        conversation.add_listener(self._on_event)

    @property
    def id(self) -> str:
        return self.conversation.id

    @property
    def transport(self) -> str:
        return self.conversation.transport

    # ---------------------------------------------------------------- wiring

    def attach(self) -> None:
        """Hook the peer connection's events; pick up tracks and channels it already has."""
        pc = self.pc
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        self._add_reply_track()

    def _add_reply_track(self) -> None:
        """Send the reply on the caller's audio transceiver if there is one already."""
        if self._reply_added:
            return
        self._reply_added = True
        for transceiver in self.pc.getTransceivers():
            sender_track: MediaStreamTrack | None = transceiver.sender.track
            if transceiver.kind == "audio" and sender_track is None:
                transceiver.sender.replaceTrack(self.reply_track)
                if transceiver.direction == "recvonly":
                    transceiver.direction = "sendrecv"
                self._watch_reply_codec(transceiver.sender)
                return
        self._watch_reply_codec(self.pc.addTrack(self.reply_track))

    def _watch_reply_codec(self, sender: Any) -> None:
        """Send the reply as Opus packets encoded here when the peer chose Opus."""

        def chosen(codec: RTCRtpCodecParameters) -> None:
            if (
                codec.mimeType.lower() != "audio/opus"
                or sender.track is not self.reply_track
                or not OpusReplyTrack.supports(self.reply_track)
            ):
                return  # G.711/G.722 peers: aiortc encodes the track's frames
            self._opus_track = OpusReplyTrack(self.reply_track)
            sender.replaceTrack(self._opus_track)
            self._clocked_reply = aiortc_reply_sender.clock_reply(sender, self._opus_track)

        fastpath.on_send_codec(sender, chosen)

    def _is_reply(self, track: MediaStreamTrack | None) -> bool:
        return track is not None and track in (self.reply_track, self._opus_track)

    def start(self) -> None:
        """The conversation is running: pump tracks already there, watch the connection."""
        for transceiver in self.pc.getTransceivers():
            track = transceiver.receiver.track
            if track is not None:
                self._on_track(track)
        self.conversation.spawn(self._watch_peer(), "peer-watch")

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track in self._tracks_seen:
            return
        self._tracks_seen.add(track)
        receiver = next(
            (t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track), None
        )
        if track.kind == "audio":
            if receiver is not None:
                fastpath.low_latency_audio(receiver)
                if self._decode_audio_here(receiver):
                    return
            self.conversation.spawn(self._pump_caller_audio(track), "caller-audio")
        elif track.kind == "video":
            if receiver is not None and self._decode_video_here(receiver):
                return
            self.conversation.watch_video(track)

    def _decode_audio_here(self, receiver: Any) -> bool:
        """Opus straight to the model's rate on the loop, not in aiortc's thread."""
        decoder = CallerAudioDecoder(
            self.conversation.input_rate, on_pcm=self._caller_pcm, on_frame=self._caller_frame
        )
        return fastpath.take_encoded_frames(receiver, decoder, on_end=_nothing)

    def _caller_pcm(self, pcm: bytes, rate: int) -> None:
        self._last_heard = time.monotonic()
        self.conversation.push_audio(pcm, rate)

    def _caller_frame(self, frame: av.AudioFrame) -> None:
        self._last_heard = time.monotonic()
        self.conversation.push_frame(frame)

    def _decode_video_here(self, receiver: Any) -> bool:
        """Decode only the camera frames the sampler will take (none when video is off)."""
        route = _Forward()
        if not fastpath.take_encoded_frames(receiver, route, on_end=_nothing):
            return False
        fastpath.throttle_remb(receiver)
        sampler = self.conversation.video_input()
        if sampler is None:
            return True  # no images for this call: frames are not decoded at all
        decoder = VideoDecoder(
            due=sampler.next_frame_due,
            interval=lambda: sampler.interval,
            deliver=sampler.offer,
            request_key_frame=lambda: _ignore(fastpath.request_key_frame(receiver)),
            lean=self.lean_video,
            light=self.light_video,
            clock=sampler.clock,
        )
        sampler.on_sample = decoder.sampled
        route.to = decoder
        self.video_decoders.append(decoder)
        return True

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != EVENTS_CHANNEL:
            log.info("call %s: ignoring data channel %r", self.id, channel.label)
            return
        self._channel = channel
        channel.on("message", self._on_peer_message)
        channel.on("open", self._flush_outbox)
        if channel.readyState == "open":
            self._flush_outbox()

    def _on_connection_state(self) -> None:
        # aiortc has no "disconnected" state: a vanished peer shows as "failed" once
        # ICE consent expires.
        state = self.pc.connectionState
        log.info("call %s: peer connection %s", self.id, state)
        if state == "connected":
            self._receive_inline()
            self._flush_outbox()
            self._check_reply_is_sent()
        elif state == "failed":
            self._close_soon("peer_failed", "ICE consent expired")
        elif state == "closed":
            self._close_soon("peer_closed")

    def _receive_inline(self) -> None:
        """Caller media straight from the socket to its receiver (aiortc_inbound)."""
        for transceiver in self.pc.getTransceivers():
            dtls = transceiver.receiver.transport
            if dtls is not None and dtls not in self._inline:
                try:  # tried once: None (aiortc's own path) if it cannot be used
                    self._inline[dtls] = receive_inline(dtls)
                except Exception:
                    log.exception("call %s: caller media stays on aiortc's path", self.id)
                    self._inline[dtls] = None

    def _check_reply_is_sent(self) -> None:
        """A send-only caller (most WHIP clients) receives no audio: nothing would read
        the reply track, so play it into nothing and let turn-taking go on unchanged."""
        if self._reply_checked:
            return
        self._reply_checked = True
        if not any(
            t.kind == "audio"
            and self._is_reply(t.sender.track)
            and t.currentDirection in ("sendrecv", "sendonly")
            for t in self.pc.getTransceivers()
        ):
            self.conversation.spawn(_play_to_nobody(self.reply_track), "reply-sink")

    async def _pump_caller_audio(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self._last_heard = time.monotonic()
            self.conversation.push_frame(frame)  # type: ignore[arg-type]

    async def _watch_peer(self) -> None:
        """Drop a call whose media never connects, or whose peer vanished."""
        deadline = time.monotonic() + self.peer_timeout
        while self.pc.connectionState != "connected":
            if time.monotonic() >= deadline:
                await self.close(
                    "peer_timeout", f"media did not connect within {self.peer_timeout:g} s"
                )
                return
            await asyncio.sleep(0.25)
        self._last_heard = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            silent = time.monotonic() - self._last_heard
            if silent > PEER_SILENCE_S:
                await self.close("peer_failed", f"nothing from the peer for {silent:.0f} s")
                return

    # ---------------------------------------------------------------- data channel

    def _on_peer_message(self, message: str | bytes) -> None:
        """The page's control messages; anything else is answered, never fatal."""
        self._last_heard = time.monotonic()
        if isinstance(message, bytes) or len(message) > MAX_PEER_MESSAGE_BYTES:
            self._send({"type": "error", "message": "messages must be short JSON text"})
            return
        if _nesting(message) > MAX_PEER_MESSAGE_DEPTH:
            self._send({"type": "error", "message": "message is nested too deeply"})
            return
        try:
            data = json.loads(message)
        except ValueError:  # JSONDecodeError, and numbers too long to convert
            self._send({"type": "error", "message": "message is not JSON"})
            return
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "ping":  # the page's heartbeat: it learns fast when we vanish
            self._send({"type": "pong"})
            return
        if kind != "ptt":
            self._send({"type": "error", "message": "unknown message; expected {type: ptt}"})
            return
        action = data.get("action")
        if action not in ("start", "stop"):
            self._send({"type": "error", "message": "ptt action must be start or stop"})
            return
        self.conversation.push_to_talk(action == "start")

    def _on_event(self, event: ConversationEvent) -> None:
        self._send(event.to_message())
        if isinstance(event, Ended):
            self._close_soon(event.reason)

    def _channel_usable(self) -> bool:
        channel = self._channel
        # aiortc fails in a background task when sending over a dead transport
        return (
            channel is not None
            and channel.readyState == "open"
            and self.pc.connectionState == "connected"
        )

    def _send(self, message: dict[str, Any]) -> None:
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

    def _close_soon(self, reason: str, detail: str = "") -> None:
        if not self._closing and self._closer is None:
            self._closer = asyncio.create_task(
                self.close(reason, detail), name=f"call-{self.id}-close"
            )

    async def close(self, reason: str = "hangup", detail: str = "") -> None:
        """End the call, its conversation and the peer connection; safe to call many times."""
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        await self.conversation.close(reason, detail)
        self.ended_reason = self.conversation.ended_reason
        await self._drain_channel()
        self.reply_track.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 2)
        for decoder in self.video_decoders:
            log.debug(
                "call %s: camera frames %s, PLIs %s",
                self.id,
                decoder.gate.stats,
                decoder.gate.pli_state,
            )
        self.closed.set()
        if self.on_closed is not None:
            self.on_closed(self)


async def _play_to_nobody(track: ReplyTrack) -> None:
    """Pace the reply as if it were heard: its queue drains and the state moves on."""
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


def _nesting(text: str) -> int:
    """Deepest bracket nesting outside strings (checked before parsing: no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


class _Forward:
    """Encoded frames to whatever ``to`` is once set (dropped before)."""

    def __init__(self) -> None:
        self.to: fastpath.EncodedFrameHandler | None = None

    def __call__(self, codec: RTCRtpCodecParameters, data: bytes, timestamp: int) -> None:
        if self.to is not None:
            self.to(codec, data, timestamp)


def _nothing() -> None:
    pass


def _ignore(_: object) -> None:
    pass
