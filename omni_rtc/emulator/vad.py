"""Energy-based voice activity detection, like the service's ``server_vad`` (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

FRAME_MS = 20


def threshold_to_dbfs(threshold: float) -> float:
    """Map the protocol's threshold (-1..1, lower = more sensitive) to a level in dBFS.

    0.5 (the default) needs about -32 dBFS of RMS; -1 triggers on almost anything.
    """
    return -45.0 + 25.0 * threshold


@dataclass(frozen=True)
class VadEvent:
    kind: Literal["start", "stop"]
    ms: int
    """Start: where speech began minus prefix padding; stop: end of the last voiced frame.
    Both count from the first sample fed after the last :meth:`EnergyVad.reset`."""


class EnergyVad:
    """Feeds pcm16 mono; reports speech start/stop per the server-VAD parameters."""

    def __init__(
        self,
        *,
        sample_rate: int,
        threshold: float = 0.5,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 800,
        min_speech_ms: int = 60,
    ) -> None:
        self.sample_rate = sample_rate
        self.level_dbfs = threshold_to_dbfs(threshold)
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms
        self.min_speech_ms = min_speech_ms
        self._frame_samples = sample_rate * FRAME_MS // 1000
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.int16)
        self._frames = 0
        self.speaking = False
        self._voiced_run = 0
        self._silent_run = 0
        self._last_voiced_end_ms = 0

    def feed(self, pcm: bytes) -> list[VadEvent]:
        samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
        data = np.concatenate((self._pending, samples))
        n = len(data) // self._frame_samples
        self._pending = data[n * self._frame_samples :].copy()
        out: list[VadEvent] = []
        if n == 0:
            return out
        frames = data[: n * self._frame_samples].reshape(n, self._frame_samples)
        rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) / 32768.0
        levels = 20.0 * np.log10(np.maximum(rms, 1e-9))
        for level in levels:
            self._frames += 1
            end_ms = self._frames * FRAME_MS
            voiced = bool(level > self.level_dbfs)
            if voiced:
                self._voiced_run += 1
                self._silent_run = 0
                self._last_voiced_end_ms = end_ms
            else:
                self._voiced_run = 0
                self._silent_run += 1
            if not self.speaking and self._voiced_run * FRAME_MS >= self.min_speech_ms:
                self.speaking = True
                began = end_ms - self._voiced_run * FRAME_MS
                out.append(VadEvent("start", max(0, began - self.prefix_padding_ms)))
            elif self.speaking and self._silent_run * FRAME_MS >= self.silence_duration_ms:
                self.speaking = False
                out.append(VadEvent("stop", self._last_voiced_end_ms))
        return out
