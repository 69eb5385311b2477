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

from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..conversation.core import Conversation
from ..conversation.events import ConversationEvent, Ended
from ..media.reply_track import ReplyTrack

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
    ) -> None:
        self.pc = pc
        self.conversation = conversation
        self.reply_track = reply_track
        self.peer_timeout = peer_timeout
        self.on_closed = on_closed
        self.closed = asyncio.Event()
        self.ended_reason: str | None = None
        self._closing = False
        self._closer: asyncio.Task[None] | None = None
        self._channel: RTCDataChannel | None = None
        self._outbox: deque[str] = deque(maxlen=OUTBOX_LIMIT)
        self._tracks_seen: set[MediaStreamTrack] = set()
        self._reply_added = False
        self._reply_checked = False
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
                return
        self.pc.addTrack(self.reply_track)

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
        if track.kind == "audio":
            for transceiver in self.pc.getTransceivers():
                if transceiver.receiver.track is track:
                    _low_latency_audio_receiver(transceiver.receiver)
            self.conversation.spawn(self._pump_caller_audio(track), "caller-audio")
        elif track.kind == "video":
            self.conversation.watch_video(track)

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
            self._flush_outbox()
            self._check_reply_is_sent()
        elif state == "failed":
            self._close_soon("peer_failed", "ICE consent expired")
        elif state == "closed":
            self._close_soon("peer_closed")

    def _check_reply_is_sent(self) -> None:
        """A send-only caller (most WHIP clients) receives no audio: nothing would read
        the reply track, so play it into nothing and let turn-taking go on unchanged."""
        if self._reply_checked:
            return
        self._reply_checked = True
        if not any(
            t.kind == "audio"
            and t.sender.track is self.reply_track
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
