"""Encoded caller audio -> pcm16 mono at the model's rate, decoded on the event loop."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import av

from .opus import OPUS_RATES, OpusDecoder, OpusError

log = logging.getLogger("omni_rtc.media")


class CallerAudioDecoder:
    """Called with aiortc's reassembled ``(codec, data, timestamp)`` frames.

    Opus goes through libopus straight to mono at ``rate`` (the model's input rate when
    Opus has it, else 48 kHz) and out as pcm with ``on_pcm(pcm, rate)``: no 48 kHz stereo
    frame, no resampler.  Other codecs a WebRTC peer may pick (G.711, G.722) go through
    aiortc's own decoder for them and out as frames with ``on_frame``.
    """

    def __init__(
        self,
        rate: int,
        *,
        on_pcm: Callable[[bytes, int], None],
        on_frame: Callable[[av.AudioFrame], None],
    ) -> None:
        self.opus_rate = rate if rate in OPUS_RATES else 48_000
        self.on_pcm = on_pcm
        self.on_frame = on_frame
        self.errors = 0
        self._opus: OpusDecoder | None = None
        self._other: Any = None
        self._other_mime: str | None = None

    def __call__(self, codec: Any, data: bytes, timestamp: int) -> None:
        mime = str(codec.mimeType).lower()
        if mime == "audio/opus":
            if self._opus is None:
                self._opus = OpusDecoder(self.opus_rate, 1)
            try:
                pcm = self._opus.decode(data)
            except OpusError:
                self.errors += 1
                return
            if pcm:
                self.on_pcm(pcm, self.opus_rate)
            return
        self._decode_other(codec, mime, data, timestamp)

    def _decode_other(self, codec: Any, mime: str, data: bytes, timestamp: int) -> None:
        from aiortc.codecs import get_decoder
        from aiortc.jitterbuffer import JitterFrame

        if self._other_mime != mime:
            self._other = get_decoder(codec)
            self._other_mime = mime
        try:
            frames = self._other.decode(JitterFrame(data, timestamp))
        except (av.FFmpegError, ValueError):
            self.errors += 1
            return
        for frame in frames:
            if isinstance(frame, av.AudioFrame):
                self.on_frame(frame)
