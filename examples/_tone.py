"""A caller that says something: a tone burst, then silence so the turn ends (examples)."""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

RATE = 48_000
SAMPLES = RATE // 50  # 20 ms


class ToneBurstTrack(MediaStreamTrack):
    """0.5 s silence, 1.2 s of 300 Hz, then silence: paced in real time like a microphone."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        t = np.arange(int(1.2 * RATE)) / RATE
        tone = (0.3 * np.sin(2 * np.pi * 300 * t) * 32767).astype("<i2")
        self._pcm = np.concatenate([np.zeros(RATE // 2, "<i2"), tone]).tobytes()
        self._index = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self._index * 0.02 - time.monotonic()))
        offset = self._index * SAMPLES * 2
        chunk = self._pcm[offset : offset + SAMPLES * 2].ljust(SAMPLES * 2, b"\0")
        frame = av.AudioFrame(format="s16", layout="mono", samples=SAMPLES)
        frame.planes[0].update(chunk)
        frame.sample_rate = RATE
        frame.pts = self._index * SAMPLES
        frame.time_base = fractions.Fraction(1, RATE)
        self._index += 1
        return frame
