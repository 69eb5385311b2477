"""Caller -> model: audio at any rate in 16 kHz chunks, camera JPEGs, push-to-talk.

Audio and push-to-talk actions leave through one queue, in order, so a release is
committed after the last word pressed; while the session is being reconnected the
queue waits (bounded) and what the caller said in the gap goes to the new session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import av
from aiortc.mediastreams import MediaStreamTrack

from ..media.audio_in import AudioIn
from ..media.frame_sampler import FrameSampler, ImageRefused
from ..media.jpeg import JpegEncoder
from ..realtime.errors import RealtimeError
from .events import CallError

if TYPE_CHECKING:
    from .core import Conversation

log = logging.getLogger("omni_rtc.call")

MIN_PTT_MS = 200
"""Shorter push-to-talk presses are dropped: the service refuses tiny buffers."""
MAX_BACKLOG_S = 5.0
"""Caller audio held while the upstream is slow or reconnecting; older audio is dropped."""
REPLAY_S = 3.0
"""Audio kept after sending, replayed to a new session if the caller was mid-sentence."""

Control = Callable[[], Awaitable[None]]


class Uplink:
    def __init__(self, conversation: Conversation, chunk_ms: int) -> None:
        self.conv = conversation
        self.audio_in = AudioIn(conversation.profile.input_rate, chunk_ms)
        self.ready = asyncio.Event()
        """Set while a session can take audio; cleared during a reconnect."""
        self._queue: deque[bytes | Control] = deque()
        self._wakeup = asyncio.Event()
        self._max_backlog = int(MAX_BACKLOG_S * 1000 / chunk_ms)
        self._recent: deque[bytes] = deque(maxlen=int(REPLAY_S * 1000 / chunk_ms))
        self._samplers: list[FrameSampler] = []
        self.ptt_active = False
        self._ptt_ms = 0.0
        self._dropped_warned = False

    # ---------------------------------------------------------------- audio

    def push_frame(self, frame: av.AudioFrame) -> None:
        self._queue_audio(self.audio_in.push(frame))

    def push_pcm(self, pcm: bytes, rate: int) -> None:
        self._queue_audio(self.audio_in.push_pcm(pcm, rate))

    def _queue_audio(self, chunks: list[bytes]) -> None:
        if not chunks or self.conv.closing or (self.conv.manual and not self.ptt_active):
            return
        self._queue.extend(chunks)
        if len(self._queue) > self._max_backlog:
            self._drop_oldest_audio()
        self._wakeup.set()

    def _drop_oldest_audio(self) -> None:
        excess = len(self._queue) - self._max_backlog
        kept: deque[bytes | Control] = deque()
        for item in self._queue:
            if excess > 0 and isinstance(item, bytes):
                excess -= 1
                continue
            kept.append(item)
        self._queue = kept
        if not self._dropped_warned:
            self._dropped_warned = True
            log.warning(
                "call %s: the model session is not taking audio; keeping only the last %.0f s",
                self.conv.id,
                MAX_BACKLOG_S,
            )

    def queue_control(self, action: Control) -> None:
        """Run ``action`` after the audio queued before it."""
        self._queue.append(action)
        self._wakeup.set()

    async def run(self) -> None:
        """Send queued audio and actions, in order, whenever a session is ready."""
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self.ready.wait()
            item = self._queue.popleft()
            if isinstance(item, bytes):
                await self.append(item)
            else:
                await item()

    async def append(self, chunk: bytes) -> None:
        client = self.conv.client
        if client is None:
            return
        try:
            await client.append_audio(chunk)
        except RealtimeError:
            return  # the upstream pump reports the closed session
        self._recent.append(chunk)
        self._dropped_warned = False
        self.conv.stats["audio_chunks"] += 1
        self.conv.bytes_up.inc(len(chunk))
        if self.conv.manual:
            self._ptt_ms += len(chunk) / 2 * 1000 / self.conv.input_rate

    def take_replay(self) -> list[bytes]:
        """The last seconds sent (to a session that has since been lost)."""
        replay = list(self._recent)
        self._recent.clear()
        return replay

    def requeue_first(self, chunks: list[bytes]) -> None:
        self._queue.extendleft(reversed(chunks))
        if chunks:
            self._wakeup.set()

    def forget_sent(self) -> None:
        self._recent.clear()

    # ---------------------------------------------------------------- images

    def watch_video(self, track: MediaStreamTrack) -> None:
        if self.conv.video_fps <= 0:
            self.conv.spawn(_drain(track), "video-drain")
            return
        self._start_sampler(track)

    def video_input(self) -> FrameSampler | None:
        """A started sampler fed with decoded frames (``offer``); None when this call
        sends no images (then no camera frame needs decoding at all)."""
        if self.conv.video_fps <= 0 or self.conv.closing:
            return None
        return self._start_sampler(None)

    def _start_sampler(self, track: MediaStreamTrack | None) -> FrameSampler:
        conv = self.conv
        sampler = FrameSampler(
            track,
            fps=conv.video_fps,
            encoder=JpegEncoder(conv.jpeg_limits),
            can_send=lambda: (
                self.ready.is_set()
                and conv.client is not None
                and conv.client.state.audio_in_buffer
            ),
            send=self.send_image,
            executor=conv.executor,
        )
        self._samplers.append(sampler)
        sampler.start()
        return sampler

    async def send_image(self, jpeg: bytes) -> None:
        """Raises :class:`ImageRefused` when the service would refuse it now."""
        conv = self.conv
        if conv.client is None or conv.closing or not self.ready.is_set():
            raise ImageRefused
        try:
            await conv.client.append_image(jpeg)
        except RealtimeError:  # no audio in the buffer yet (ImageBeforeAudio), or closed
            raise ImageRefused from None
        conv.stats["images"] += 1
        conv.metrics.images_sent.inc()
        conv.bytes_up.inc(len(jpeg))

    async def stop(self) -> None:
        for sampler in self._samplers:
            await sampler.stop()
        self._samplers.clear()
        self._queue.clear()
        self.audio_in.close()

    # ---------------------------------------------------------------- push-to-talk

    async def ptt_start(self) -> None:
        conv = self.conv
        if self.ptt_active or conv.client is None:
            return
        if conv.sink.playing or conv.client.state.response_active:
            await conv.barge_in()
        self.audio_in.flush()
        with contextlib.suppress(RealtimeError):
            await conv.client.clear()
        self._ptt_ms = 0.0
        self.ptt_active = True
        conv.activity()
        conv.set_state("listening")

    async def ptt_stop(self) -> None:
        conv = self.conv
        if not self.ptt_active or conv.client is None:
            return
        self.ptt_active = False
        rest = self.audio_in.flush()
        if rest:
            await self.append(rest)
        try:
            if self._ptt_ms < MIN_PTT_MS:
                await conv.client.clear()
                conv.emit(CallError("Too short: hold the button while you speak."))
                return
            conv.downlink.turn_ended()
            await conv.client.commit()
            await conv.client.create_response()
        except RealtimeError:
            return  # the session is gone; the upstream pump deals with it
        conv.set_state("thinking")


async def _drain(track: MediaStreamTrack) -> None:
    """Read and drop a track we don't use (unread aiortc tracks queue every frame)."""
    with contextlib.suppress(Exception):
        while True:
            await track.recv()
