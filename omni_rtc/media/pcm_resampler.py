"""Stateful mono pcm16 rate conversion, bytes in, bytes out, with PyAV.

One instance per direction of one stream: the filter state carries across chunks, so
cutting a 24 kHz reply into 8 kHz telephone frames adds no click at chunk boundaries.
"""

from __future__ import annotations

import av

from .resample import Resampler


class PcmResampler:
    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError("sample rates must be positive")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._resampler: Resampler | None = None
        self._odd = b""

    @property
    def passthrough(self) -> bool:
        return self.in_rate == self.out_rate

    def convert(self, pcm: bytes) -> bytes:
        """Resample a chunk (any length; an odd trailing byte waits for the next chunk)."""
        if self._odd:
            pcm = self._odd + pcm
            self._odd = b""
        if len(pcm) % 2:
            self._odd = pcm[-1:]
            pcm = pcm[:-1]
        if not pcm or self.passthrough:
            return pcm
        if self._resampler is None:
            self._resampler = Resampler(format="s16", layout="mono", rate=self.out_rate)
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
        frame.planes[0].update(pcm)
        frame.sample_rate = self.in_rate
        return b"".join(_pcm(out) for out in self._resampler.resample(frame))

    def drain(self) -> bytes:
        """The samples still inside the filter (end of a reply)."""
        self._odd = b""
        if self._resampler is None:
            return b""
        rest = b"".join(_pcm(out) for out in self._resampler.resample(None))
        self._resampler = None
        return rest

    def reset(self) -> None:
        """Forget everything held (barge-in: nothing of the old reply may leak out)."""
        self._odd = b""
        self._resampler = None


def _pcm(frame: av.AudioFrame) -> bytes:
    return bytes(frame.planes[0])[: frame.samples * 2]
