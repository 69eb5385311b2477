"""PyAV codec wrappers for the RTP endpoint: payload <-> mono pcm16 at a chosen rate.

One decoder and one encoder per stream, each with at most one stateful
``av.AudioResampler`` (created only when the codec's output differs from what we
deliver: Opus decodes to float, or a re-INVITE changed the codec's rate).
"""

from __future__ import annotations

import fractions
from typing import cast

import av
from av.audio.codeccontext import AudioCodecContext

from omni_rtc.media.resample import Resampler
from omni_rtc.sip.sdp import Codec


class AudioDecoder:
    """RTP payloads -> mono pcm16 at ``codec.audio_rate``."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.rate = codec.audio_rate
        name = "libopus" if codec.name == "opus" else codec.av_name
        self._ctx = cast(AudioCodecContext, av.CodecContext.create(name, "r"))
        self._ctx.sample_rate = codec.audio_rate
        self._ctx.layout = "mono"
        self._resampler: Resampler | None = None

    def decode(self, payload: bytes) -> bytes:
        try:
            frames = self._ctx.decode(av.Packet(payload))
        except (av.FFmpegError, ValueError):
            return b""  # a corrupt payload costs its frame, not the call
        out = b""
        for frame in frames:
            fmt = frame.format.name
            if fmt == "s16" and frame.layout.nb_channels == 1 and frame.sample_rate == self.rate:
                out += bytes(frame.planes[0])[: frame.samples * 2]
                continue
            if self._resampler is None:
                self._resampler = Resampler(format="s16", layout="mono", rate=self.rate)
            for converted in self._resampler.resample(frame):
                out += bytes(converted.planes[0])[: converted.samples * 2]
        return out


class AudioEncoder:
    """Frames of mono pcm16 at ``input_rate`` -> one RTP payload per frame."""

    def __init__(self, codec: Codec, input_rate: int) -> None:
        self.codec = codec
        self.input_rate = input_rate
        self._ctx = cast(AudioCodecContext, av.CodecContext.create(codec.av_name, "w"))
        self._ctx.sample_rate = codec.audio_rate
        self._ctx.format = "s16"
        self._ctx.layout = "mono"
        self._ctx.time_base = fractions.Fraction(1, codec.audio_rate)
        if codec.name == "opus":
            self._ctx.bit_rate = 32_000
        self._resampler: Resampler | None = None
        if input_rate != codec.audio_rate:
            self._resampler = Resampler(format="s16", layout="mono", rate=codec.audio_rate)
        self._pts = 0

    def encode(self, frame: av.AudioFrame) -> list[bytes]:
        frames = [frame] if self._resampler is None else self._resampler.resample(frame)
        out: list[bytes] = []
        for f in frames:
            f.pts = self._pts
            f.time_base = self._ctx.time_base
            self._pts += f.samples
            out += [bytes(p) for p in self._ctx.encode(f)]
        return out


def pcm_frame(pcm: bytes, rate: int, pts: int = 0) -> av.AudioFrame:
    samples = len(pcm) // 2
    frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
    frame.planes[0].update(pcm[: samples * 2])
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, rate)
    return frame
