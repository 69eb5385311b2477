"""Odd media never kills a call: audio at any rate and chunk size, tiny, huge and
changing camera frames, images that are not JPEG (the media rows of the bad-input matrix)."""

from __future__ import annotations

import asyncio
import fractions
import logging
import time

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from omni_rtc.media.jpeg import inspect_jpeg
from tests.conftest import run_bridge
from tests.helpers import pattern_jpeg, sine_pcm, utterance, wait_for
from tests.integration.test_conversation import Collector, bridge_on
from tests.peer import LoopingPcmTrack, TestPeer


class ShiftingCamera(MediaStreamTrack):
    """A camera whose frame size changes: tiny, odd, huge, back to normal."""

    kind = "video"
    SIZES = ((2, 2), (1, 1), (3, 5), (4000, 3000), (640, 480), (320, 240), (1281, 721))

    def __init__(self, per_size: int = 6, fps: int = 5) -> None:
        super().__init__()
        self.per_size = per_size
        self.fps = fps
        self.index = 0
        self.start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        await asyncio.sleep(max(0.0, self.start + self.index / self.fps - time.monotonic()))
        width, height = self.SIZES[(self.index // self.per_size) % len(self.SIZES)]
        rgb = np.full((height, width, 3), (self.index * 37) % 256, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.index * (90_000 // self.fps)
        frame.time_base = fractions.Fraction(1, 90_000)
        self.index += 1
        return frame


async def test_camera_frames_of_every_size_give_valid_jpegs_and_the_call_lives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with run_bridge(["--video-fps", "2"]) as bridge:
        peer = TestPeer(bridge.url, LoopingPcmTrack(sine_pcm(1.0, 48_000)), ShiftingCamera())
        try:
            await peer.call()
            await peer.wait_connected()
            record = bridge.emulator.sessions[0]
            await wait_for(lambda: len(record.images) >= 12, 30)
            peer.send({"type": "ping"})
            await peer.wait_message(lambda m: m.get("type") == "pong")
            assert bridge.manager.active == 1
        finally:
            await peer.close()
    images = list(record.images)
    assert all(i.accepted for i in images), [i.error for i in images]
    sizes = {(i.width, i.height) for i in images}
    assert all(w <= 1280 and h <= 720 for w, h in sizes), sizes
    assert len(sizes) >= 3  # the size changes reached the model as they happened
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("rate", [0, 1, 7, 7999, 192_001, -16000])
async def test_audio_rates_nobody_records_at_are_refused_clearly(rate: int) -> None:
    async with bridge_on() as bridge, await bridge.open_pipe() as pipe:
        with pytest.raises(ValueError, match=r"audio rate must be 8000\.\.192000 Hz"):
            pipe.conversation.push_audio(bytes(320), rate)
        pipe.push(bytes(320))  # and the call goes on
        assert not pipe.closed.is_set()


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 96000, 192000])
async def test_caller_audio_at_any_rate(rate: int) -> None:
    async with bridge_on() as bridge, await bridge.open_pipe() as pipe:
        pipe.conversation.push_audio(utterance(rate, speech_s=0.6, tail_s=1.0), rate)
        await asyncio.sleep(0.3)
        record = bridge.emulator.sessions[0]  # type: ignore[attr-defined]
        seconds = record.audio_seconds_total
        alive = not pipe.closed.is_set()
    assert alive
    assert abs(seconds - 2.1) < 0.1, seconds  # resampled to 16 kHz, nothing lost


async def test_odd_chunks_and_rate_changes_mid_stream() -> None:
    async with bridge_on() as bridge, await bridge.open_pipe(input_rate=8000) as pipe:
        got = Collector(pipe)
        for chunk in (b"", b"\x01", b"\x01\x02\x03", bytes(1), bytes(16_001)):
            pipe.push(chunk)
        pipe.conversation.push_audio(sine_pcm(0.5, 44_100), 44_100)  # the rate changes
        pipe.conversation.push_audio(sine_pcm(0.5, 16_000), 16_000)
        pipe.push(sine_pcm(10.0, 8000))  # ten seconds at once
        pipe.push(bytes(8000 * 2))
        await wait_for(lambda: "thinking" in got.states(), 10)
        alive = not pipe.closed.is_set()
        record = bridge.emulator.sessions[0]  # type: ignore[attr-defined]
    assert alive
    assert record.audio_seconds_total >= 4.9  # a backlog is bounded (5 s), not fatal


@pytest.mark.parametrize(
    ("image", "accepted"),
    [
        (b"", False),
        (b"not a jpeg at all", False),
        (b"\xff\xd8" + bytes(100) + b"\xff\xd9", True),  # JPEG-shaped: the service judges
        (b"\xff\xd8" + bytes(600_000) + b"\xff\xd9", False),  # over the service's limit
        (None, True),  # a real JPEG
    ],
)
async def test_images_from_an_embedder_are_checked_at_the_edge(image, accepted) -> None:
    jpeg = pattern_jpeg() if image is None else image
    async with bridge_on() as bridge, await bridge.open_pipe() as pipe:
        got = Collector(pipe)
        pipe.push(sine_pcm(0.2, 16_000))
        await asyncio.sleep(0.2)
        sent = await pipe.send_image(jpeg)
        await asyncio.sleep(0.2)
        alive = not pipe.closed.is_set()
    assert alive
    assert sent is accepted
    if not accepted:
        assert got.events[-2].to_message()["type"] == "error"
    if image is None:
        assert inspect_jpeg(jpeg) == (640, 480)
