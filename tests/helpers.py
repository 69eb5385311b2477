"""Signals and small utilities shared by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Callable, Iterator

import aiortc
import av
import numpy as np
import pytest

from omni_rtc.media.jpeg import JpegEncoder, JpegLimits
from omni_rtc.transports.aiortc_fastpath import TESTED_AIORTC

needs_tested_aiortc = pytest.mark.skipif(
    not aiortc.__version__.startswith(TESTED_AIORTC),
    reason=f"aiortc {aiortc.__version__}: the stand-ins for aiortc's internals are written "
    f"for {TESTED_AIORTC}x and give way to aiortc's own paths on other releases",
)
"""For tests of the modules that reach into aiortc's internals (Python 3.10 gets 1.15)."""

RESPONSE_ORDER = [
    "response.created",
    "conversation.item.input_audio_transcription.completed",
    "response.output_item.added",
    "conversation.item.created",
    "response.content_part.added",
    "response.audio_transcript.done",
    "response.audio.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.done",
]
"""PROTOCOL.md's response sequence (deltas aside), as the emulator must send it."""


def sine_pcm(seconds: float, rate: int, hz: float = 300.0, amplitude: float = 0.3) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t) * 32767).astype("<i2").tobytes()


def silence_pcm(seconds: float, rate: int) -> bytes:
    return bytes(int(seconds * rate) * 2)


def utterance(
    rate: int = 16_000, speech_s: float = 1.2, lead_s: float = 0.5, tail_s: float = 1.2
) -> bytes:
    """Silence, a 'spoken' tone burst, then enough silence for server VAD to end the turn."""
    return silence_pcm(lead_s, rate) + sine_pcm(speech_s, rate) + silence_pcm(tail_s, rate)


def pattern_jpeg(width: int = 640, height: int = 480) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 255 // width), (y * 255 // height), ((x + y) % 64) * 4], axis=-1).astype(
        np.uint8
    )
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return JpegEncoder(JpegLimits()).encode(frame).data


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def wait_for(
    predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:.1f} s")
        await asyncio.sleep(interval)


@contextlib.contextmanager
def busy_loop() -> Iterator[None]:
    """CPU-bound work on the running event loop's thread, 8 ms of every 10, while inside."""
    loop = asyncio.get_running_loop()
    hogging = True

    def hog() -> None:
        if hogging:
            deadline = time.thread_time() + 0.008
            while time.thread_time() < deadline:
                pass
            loop.call_later(0.002, hog)

    hog()
    try:
        yield
    finally:
        hogging = False


async def collect_until(
    events: AsyncIterator, stop: Callable[[object], bool], timeout: float = 10.0
) -> list:
    out: list = []

    async def run() -> None:
        async for event in events:
            out.append(event)
            if stop(event):
                return

    await asyncio.wait_for(run(), timeout)
    return out


def decode_wav_mono(data: bytes) -> tuple[np.ndarray, int]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono")
        pcm = b"".join(
            bytes(f.planes[0])[: f.samples * 2]
            for fr in container.decode(stream)
            for f in resampler.resample(fr)
        )
        return np.frombuffer(pcm, dtype="<i2"), stream.rate


def best_correlation(a: np.ndarray, b: np.ndarray, max_lag: int) -> float:
    """Waveform correlation at the best lag (codec delay)."""
    n = min(len(a), len(b)) - max_lag
    return max(float(np.corrcoef(a[:n], b[lag : lag + n])[0, 1]) for lag in range(max_lag))


def assert_at_most_fps(arrivals: list[float], fps: float = 2.0) -> None:
    """Images arrived at no more than ``fps`` a second.

    The sampler starts an encode at most every 1/fps s; arrival times add encode and
    network jitter, so one gap may be shorter, but never by much, and the rate holds.
    """
    assert len(arrivals) >= 2, arrivals
    gaps = np.diff(arrivals)
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert rate <= fps * 1.05, f"{rate:.2f} images/s, gaps {gaps}"
    assert gaps.min() >= 0.6 / fps, f"gaps {gaps}"
