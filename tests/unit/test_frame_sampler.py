import asyncio
import fractions
import itertools
import random
import threading
import time

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from omni_rtc.media.frame_sampler import FrameSampler, ImageRefused
from omni_rtc.media.jpeg import JpegEncoder, JpegLimits, inspect_jpeg


class SyntheticCamera(MediaStreamTrack):
    """A 30 fps 1920x1080 camera for ``seconds``, like aiortc's decoded remote track."""

    kind = "video"

    def __init__(self, seconds: float, fps: int = 30, size: tuple[int, int] = (1920, 1080)) -> None:
        super().__init__()
        self.fps = fps
        self.total = int(seconds * fps)
        self.count = 0
        w, h = size
        y, x = np.mgrid[0:h, 0:w]
        self.frames = []
        for k in range(4):
            rgb = np.stack(
                [(x + 40 * k) % 256, y % 256, (x // 64 + y // 64 + k) % 2 * 255], axis=-1
            )
            self.frames.append(
                av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24").reformat(
                    format="yuv420p"
                )
            )
        self.start: float | None = None

    async def recv(self) -> av.VideoFrame:
        loop = asyncio.get_running_loop()
        if self.start is None:
            self.start = loop.time()
        if self.count >= self.total:
            raise MediaStreamError
        due = self.start + self.count / self.fps
        await asyncio.sleep(max(0.0, due - loop.time()))
        frame = self.frames[self.count % 4]
        frame.pts = self.count * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        self.count += 1
        return frame


class Upstream:
    def __init__(self, audio_after: float, send_seconds: float = 0.0) -> None:
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.audio_after = audio_after
        self.send_seconds = send_seconds
        self.sent: list[tuple[float, bytes]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def has_audio(self) -> bool:
        return self.loop.time() - self.t0 >= self.audio_after

    async def send(self, jpeg: bytes) -> None:
        if not self.has_audio():
            raise ImageRefused
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.sent.append((self.loop.time() - self.t0, jpeg))
        await asyncio.sleep(self.send_seconds)
        self.in_flight -= 1


async def run_sampler(
    camera: SyntheticCamera, upstream: Upstream, fps: float, encoder: JpegEncoder, duration: float
) -> FrameSampler:
    sampler = FrameSampler(
        camera, fps=fps, encoder=encoder, can_send=upstream.has_audio, send=upstream.send
    )
    sampler.start()
    await asyncio.sleep(duration)
    await sampler.stop()
    return sampler


async def test_ten_seconds_of_30fps_gives_valid_jpegs_at_2fps_none_before_audio() -> None:
    encode_threads: set[int] = set()
    encoder = JpegEncoder(JpegLimits())
    original = encoder.encode

    def encode(frame):
        encode_threads.add(threading.get_ident())
        return original(frame)

    encoder.encode = encode  # type: ignore[method-assign]
    camera = SyntheticCamera(seconds=10)
    upstream = Upstream(audio_after=2.0)
    sampler = await run_sampler(camera, upstream, 2.0, encoder, duration=10.2)

    times = [t for t, _ in upstream.sent]
    assert times, "no image sent"
    assert min(times) >= 2.0  # none before audio
    # fps cap: never closer than 0.46 s (a late image's successor keeps the grid)
    assert all(b - a >= 0.46 - 0.005 for a, b in itertools.pairwise(times))
    assert 14 <= len(times) <= 17  # about 8 s x 2 fps
    for _, jpeg in upstream.sent:
        width, height = inspect_jpeg(jpeg)
        assert (width, height) == (1280, 720)  # 1080p scaled to fit 720p
        assert len(jpeg) <= 180_000
    assert sampler.stats.frames_read >= 290  # every frame read and dropped: no backlog
    assert threading.get_ident() not in encode_threads  # encoding never on the event loop


async def test_slow_upstream_means_fewer_images_never_a_queue() -> None:
    camera = SyntheticCamera(seconds=4)
    upstream = Upstream(audio_after=0.0, send_seconds=1.5)
    sampler = await run_sampler(camera, upstream, 2.0, JpegEncoder(), duration=4.1)
    assert upstream.max_in_flight == 1
    assert 2 <= len(upstream.sent) <= 3
    assert sampler.stats.frames_read >= 115


async def test_lower_fps_and_byte_budget() -> None:
    camera = SyntheticCamera(seconds=4, size=(640, 480))
    upstream = Upstream(audio_after=0.0)
    sampler = await run_sampler(
        camera, upstream, 0.5, JpegEncoder(JpegLimits(max_bytes=20_000)), duration=4.1
    )
    assert 2 <= len(upstream.sent) <= 3
    for _, jpeg in upstream.sent:
        assert len(jpeg) <= 20_000
        assert inspect_jpeg(jpeg) == (640, 480)
    assert sampler.stats.last_size == (640, 480)


async def test_image_refused_at_send_time_is_counted_not_fatal() -> None:
    camera = SyntheticCamera(seconds=2, size=(320, 240))
    flips = iter([True, False, True, True, True, True, True, True])
    upstream = Upstream(audio_after=0.0)

    async def send(jpeg: bytes) -> None:
        raise ImageRefused

    sampler = FrameSampler(
        camera, fps=2, encoder=JpegEncoder(), can_send=lambda: next(flips, True), send=send
    )
    sampler.start()
    await asyncio.sleep(1.2)
    await sampler.stop()
    assert sampler.stats.images_refused >= 1
    assert sampler.stats.images_sent == 0
    del upstream


async def test_late_images_do_not_add_up_into_fewer_images() -> None:
    """Every third encode is 80 ms slower than the one before (a busy executor): those
    images leave late, but the ones after keep the 2 fps schedule, never closer than
    0.46 s to the one before."""
    encoder = JpegEncoder()
    original = encoder.encode
    calls = itertools.count()

    def encode(frame: av.VideoFrame):  # type: ignore[no-untyped-def]
        if next(calls) % 3 == 2:
            time.sleep(0.08)
        return original(frame)

    encoder.encode = encode  # type: ignore[method-assign]
    camera = SyntheticCamera(seconds=10.5, size=(320, 240))
    upstream = Upstream(audio_after=0.0)
    await run_sampler(camera, upstream, 2.0, encoder, duration=10.3)
    times = [t for t, _ in upstream.sent]
    gaps = np.diff(times)
    assert gaps.min() >= 0.46 - 0.005, gaps
    assert len(times) >= 20, times  # 2 a second; late images used to cost ~1 in 12
    assert (times[-1] - times[0]) / (len(times) - 1) <= 0.505, gaps


async def test_no_image_of_a_frame_kept_while_no_audio_could_be_sent() -> None:
    """Push-to-talk between turns: the frame from before the gap is not sent after it."""
    audio = {"on": False}
    sent: list[int] = []

    async def send(jpeg: bytes) -> None:
        sent.append(len(jpeg))

    sampler = FrameSampler(
        None, fps=2, encoder=JpegEncoder(), can_send=lambda: audio["on"], send=send
    )
    old, new = SyntheticCamera(0, size=(320, 240)).frames[:2]
    sampler.start()
    try:
        sampler.offer(old)  # the last frame decoded before the caller stopped talking
        await asyncio.sleep(0.3)
        audio["on"] = True
        await asyncio.sleep(0.6)
        assert sent == []  # not the frame from before the gap
        sampler.offer(new)
        await asyncio.sleep(0.3)
    finally:
        await sampler.stop()
    assert len(sent) == 1


async def test_a_refused_image_is_tried_again_at_the_next_slot_not_every_frame() -> None:
    encodes = itertools.count()
    encoder = JpegEncoder()
    original = encoder.encode

    def encode(frame: av.VideoFrame):  # type: ignore[no-untyped-def]
        next(encodes)
        return original(frame)

    encoder.encode = encode  # type: ignore[method-assign]

    async def refuse(jpeg: bytes) -> None:
        raise ImageRefused

    camera = SyntheticCamera(seconds=3, size=(320, 240))
    sampler = FrameSampler(camera, fps=2, encoder=encoder, can_send=lambda: True, send=refuse)
    sampler.start()
    await asyncio.sleep(3.0)
    await sampler.stop()
    assert 4 <= sampler.stats.images_refused <= 8  # one a slot, not one a frame (~90)
    assert next(encodes) <= 8


async def test_images_after_a_late_one_carry_fresh_frames() -> None:
    """One encode takes 0.35 s (a stalled executor), the others 0-60 ms: the late image's
    followers catch up on the 2 fps grid without carrying frames that waited for the
    0.46 s gap."""
    encoder = JpegEncoder()
    original = encoder.encode
    calls = itertools.count()
    taken: list[int] = []
    jitter = random.Random(3)

    def encode(frame: av.VideoFrame):  # type: ignore[no-untyped-def]
        taken.append(int(frame.pts or 0))
        time.sleep(0.35 if next(calls) == 3 else jitter.uniform(0, 0.06))
        return original(frame)

    encoder.encode = encode  # type: ignore[method-assign]
    camera = SyntheticCamera(seconds=8.5, size=(320, 240))
    upstream = Upstream(audio_after=0.0)
    await run_sampler(camera, upstream, 2.0, encoder, duration=8.3)
    assert camera.start is not None
    sent_at = [upstream.t0 + t for t, _ in upstream.sent]
    captured_at = [camera.start + pts / 90000 for pts in taken[: len(sent_at)]]
    ages = [sent - captured for sent, captured in zip(sent_at, captured_at, strict=True)]
    late = 3
    assert ages[late] >= 0.3, ages  # the stalled one
    assert max(ages[late + 1 :]) <= 0.25, ages  # 0.39 when taken at their slots
    gaps = np.diff([t for t, _ in upstream.sent])
    assert gaps.min() >= 0.46 - 0.005, gaps
    assert len(sent_at) >= 15, sent_at  # 2 a second, the late one caught up
