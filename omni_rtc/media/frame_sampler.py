"""The caller's camera -> ``fps`` JPEGs a second at most (on average), never a backlog."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .jpeg import EncodedImage, InvalidImage, JpegEncoder

log = logging.getLogger("omni_rtc.media")


MIN_GAP_FRACTION = 0.92
"""Two images never leave closer than this share of the interval (0.46 s at 2 fps),
even when catching up after a late one."""


MAX_LEAD_S = 0.08
"""A frame is taken at most this much ahead of its slot: a camera decoded from its key
frames is skipped in wait for the next key frame only if the image is due no more than
0.1 s before it (``DecodeGate.slack``); taken earlier, every image would cost the chain
of inter frames before it.  A slower JPEG (a busy executor) sends its image late."""


TYPICAL_ENCODES = 8
"""The median of this many last encoding times predicts the next: one slow encode (a
stalled executor) is not the norm."""


CATCH_UP_MARGIN_S = 0.08
"""While catching up, a frame is taken this much before it would be encoded just in
time to leave: an encode slower than the typical one still leaves on time (the catch-up
keeps its pace), and a steadily slow, jittery executor's frames stay on the grid."""


class ImageRefused(Exception):
    """Raised by the ``send`` callback when the image may not go out now (no audio yet)."""


@dataclass
class SamplerStats:
    frames_read: int = 0
    images_sent: int = 0
    images_refused: int = 0
    """Encoded, but the input buffer held no audio by the time it was ready."""
    waits_for_audio: int = 0
    encode_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    last_size: tuple[int, int] = (0, 0)
    last_bytes: int = 0


class FrameSampler:
    """Reads a remote video track continuously and sends its latest frame as JPEG.

    The reader drops every frame it doesn't keep (an unread aiortc track still decodes
    and queues every frame).  The sender wakes about every ``1/fps`` s (see
    :meth:`_sample`), encodes the newest frame in ``executor`` and awaits ``send``:
    while one image is in flight no other is started, so a slow upstream means fewer
    images, never a queue.

    Without a ``track``, frames are handed in with :meth:`offer` by a decoder that asks
    :meth:`next_frame_due` which frames are worth decoding at all.
    """

    def __init__(
        self,
        track: MediaStreamTrack | None,
        *,
        fps: float,
        encoder: JpegEncoder,
        can_send: Callable[[], bool],
        send: Callable[[bytes], Awaitable[None]],
        executor: Executor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.5 <= fps <= 2:
            raise ValueError(f"fps must be within 0.5..2, got {fps}")
        self.track = track
        self.interval = 1.0 / fps
        self.encoder = encoder
        self.can_send = can_send
        self.send = send
        self.executor = executor
        self.clock = clock
        self.stats = SamplerStats()
        self.on_sample: Callable[[], None] | None = None
        """Called when a frame is taken for an image."""
        self._latest: av.VideoFrame | None = None
        self._fresh = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._due = -math.inf

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._sample(), name="frame-sampler-send")]
        if self.track is not None:
            self._tasks.append(asyncio.create_task(self._read(), name="frame-sampler-read"))

    def offer(self, frame: av.VideoFrame) -> None:
        """A decoded camera frame (the newest replaces any not yet taken)."""
        self.stats.frames_read += 1
        self._latest = frame
        self._fresh.set()

    def next_frame_due(self) -> float:
        """When the next frame will be taken (``clock`` time): frames decoded long before
        are wasted.  ``math.inf`` while no image may be sent (no caller audio yet)."""
        if not self._tasks or not self.can_send():
            return math.inf
        return self._due

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._latest = None

    async def _read(self) -> None:
        assert self.track is not None
        while True:
            try:
                frame = await self.track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.VideoFrame):
                continue
            self.offer(frame)

    def _typical_encode(self) -> float:
        recent = list(itertools.islice(reversed(self.stats.encode_seconds), TYPICAL_ENCODES))
        return statistics.median(recent) if recent else 0.0

    def _take_at(self, slot: float, earliest_leave: float, encode_lead: float) -> float:
        """When to take the frame for the image at ``slot`` that may not leave before
        ``earliest_leave`` (the gap to the one before): on the grid, ahead of it by the
        encoding lead, unless the image would then wait for the gap: then in time to be
        encoded when it may leave (less :data:`CATCH_UP_MARGIN_S`).  Taken at their
        slots, the images after one 0.4 s late carried frames up to 0.4 s old for five
        seconds."""
        just_in_time = earliest_leave - self._typical_encode() - CATCH_UP_MARGIN_S
        return max(slot - encode_lead, just_in_time)

    async def _sample(self) -> None:
        """Frames are taken on a grid ``interval`` apart (ahead of it by the last JPEG's
        encoding time, at most :data:`MAX_LEAD_S`), and their images leave once ready,
        never closer than :data:`MIN_GAP_FRACTION` of the interval to the one before:
        fps on average, never more.

        A late image (a busy loop or executor, a frame that arrived after its slot) does
        not move the grid, so lateness does not add up into fewer images (the next ones
        catch up, each at most 8% early), nor into frames taken where a camera decoded
        from its key frames has none (:mod:`omni_rtc.media.video_gate`); an image more
        than an interval late restarts the grid.  While catching up, a frame that would
        wait out the gap to the image before is taken off the grid, later (see
        :meth:`_take_at`): a fresher image for a few more decoded frames from a camera
        decoded from its key frames."""
        loop = asyncio.get_running_loop()
        last_sent = -math.inf
        slot = -math.inf
        """The next image's place on the grid."""
        encode_lead = 0.0
        min_gap = MIN_GAP_FRACTION * self.interval
        while True:
            take_at = self._take_at(slot, last_sent + min_gap, encode_lead)
            self._due = take_at
            await self._fresh.wait()
            delay = self._due - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
            if not self.can_send():
                # The service rejects images before audio: wait for audio, don't queue,
                # and don't keep the frame: it would be seconds old by then.
                self.stats.waits_for_audio += 1
                self._latest = None
                self._fresh.clear()
                await asyncio.sleep(min(0.05, self.interval))
                continue
            frame, self._latest = self._latest, None
            self._fresh.clear()
            if frame is None:
                continue
            started = self.clock()
            if started - max(slot, take_at) > self.interval:
                slot = started  # fell behind (or the first image): a new grid from now
            next_slot = slot + self.interval
            # Until this image is sent, the next frame is due on the grid: too early a due
            # costs decoding, too late one could have the gate skip frames it then needs.
            self._due = next_slot - encode_lead
            if self.on_sample is not None:
                self.on_sample()
            try:
                image: EncodedImage = await loop.run_in_executor(
                    self.executor, self.encoder.encode, frame
                )
            except InvalidImage as exc:
                log.warning("camera frame dropped: %s", str(exc))
                continue
            encoded_in = self.clock() - started
            self.stats.encode_seconds.append(encoded_in)
            encode_lead = min(encoded_in, MAX_LEAD_S)
            wait = max(slot, last_sent + min_gap) - self.clock()
            if wait > 0:
                await asyncio.sleep(wait)
            sending = self.clock()
            slot = next_slot  # sent or refused: the next image at the next slot
            try:
                await self.send(image.data)
            except ImageRefused:
                self.stats.images_refused += 1
                continue
            last_sent = sending
            self.stats.images_sent += 1
            self.stats.last_size = (image.width, image.height)
            self.stats.last_bytes = len(image.data)
