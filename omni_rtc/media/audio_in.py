"""Caller audio of any rate, layout and sample format -> fixed-size mono pcm16 chunks."""

from __future__ import annotations

import av

from . import DEFAULT_CHUNK_MS
from .resample import Resampler


class AudioIn:
    """Resamples decoded frames to mono s16le at the profile's input rate, in chunks.

    One PyAV resampler per stream keeps the filter state across frames, so there are no
    clicks at chunk boundaries; it is rebuilt only when the input format changes.
    """

    def __init__(self, rate: int, chunk_ms: int = DEFAULT_CHUNK_MS) -> None:
        if not 10 <= chunk_ms <= 100:
            raise ValueError(f"chunk_ms must be within 10..100, got {chunk_ms}")
        self.rate = rate
        self.chunk_ms = chunk_ms
        self.chunk_bytes = rate * chunk_ms // 1000 * 2
        self._resampler: Resampler | None = None
        self._input_format: tuple[int, str, str] | None = None
        self._pending = bytearray()
        self._aligned = False
        self._stream_in = 0
        self._stream_out = 0
        self.samples_in = 0
        self.samples_out = 0

    def push(self, frame: av.AudioFrame) -> list[bytes]:
        """Feed one decoded frame; returns every complete chunk now available."""
        signature = (frame.sample_rate, frame.layout.name, frame.format.name)
        if signature != self._input_format:
            self._drain_resampler()
            self._resampler = Resampler(format="s16", layout="mono", rate=self.rate)
            self._input_format = signature
            self._aligned = False
            self._stream_in = 0
            self._stream_out = 0
        assert self._resampler is not None
        self.samples_in += frame.samples
        self._stream_in += frame.samples
        frame.pts = None  # a jump in RTP time must not make swresample pad or drop
        outputs = self._resampler.resample(frame)
        if not self._aligned and outputs:
            self._align(frame.sample_rate, sum(o.samples for o in outputs))
        for out in outputs:
            self._stream_out += out.samples
            self._append(out)
        return self._take_chunks()

    def push_pcm(self, pcm: bytes, rate: int) -> list[bytes]:
        """Feed pcm16 mono at ``rate``; at the output rate no resampler is involved."""
        usable = len(pcm) // 2 * 2
        if rate != self.rate:
            frame = av.AudioFrame(format="s16", layout="mono", samples=usable // 2)
            frame.planes[0].update(pcm[:usable] if usable != len(pcm) else pcm)
            frame.sample_rate = rate
            return self.push(frame)
        if self._input_format is not None:  # frames of another format came before
            self._drain_resampler()
            self._input_format = None
        self.samples_in += usable // 2
        self.samples_out += usable // 2
        self._pending += pcm if usable == len(pcm) else pcm[:usable]
        return self._take_chunks()

    def _align(self, in_rate: int, produced: int) -> None:
        """Pad once by the resampler's look-ahead so output time equals input time.

        swresample holds back a few samples of filter look-ahead; without this, every
        chunk would wait for the next input frame (+20 ms on each 20 ms chunk).
        """
        self._aligned = True
        expected = self._stream_in * self.rate // in_rate
        held = expected - (self._stream_out + produced)
        if 0 < held <= self.rate // 100:  # at most 10 ms: a filter delay, not a gap
            self._pending += bytes(held * 2)
            self.samples_out += held

    def flush(self) -> bytes:
        """Everything still held (end of stream, or push-to-talk released)."""
        self._drain_resampler()
        self._input_format = None
        rest = bytes(self._pending)
        self._pending.clear()
        return rest

    def close(self) -> None:
        """Release the filter graph now, not whenever the garbage collector runs."""
        self._resampler = None
        self._input_format = None
        self._pending.clear()

    def _drain_resampler(self) -> None:
        if self._resampler is not None:
            for out in self._resampler.resample(None):
                self._append(out)
            self._resampler = None

    def _append(self, frame: av.AudioFrame) -> None:
        self._pending += bytes(frame.planes[0])[: frame.samples * 2]
        self.samples_out += frame.samples

    def _take_chunks(self) -> list[bytes]:
        n = len(self._pending) // self.chunk_bytes
        if n == 0:
            return []
        cut = n * self.chunk_bytes
        data = bytes(self._pending[:cut])
        del self._pending[:cut]
        return [data[i : i + self.chunk_bytes] for i in range(0, cut, self.chunk_bytes)]
