"""Opus straight through libopus: decode at the rate we need, encode 20 ms voice frames.

FFmpeg's libopus wrapper (PyAV) always decodes at 48 kHz, so a 16 kHz model input costs
a decode at 48 kHz plus a resampler, and every packet and frame is a PyAV object.
libopus itself decodes to 8, 12, 16, 24 or 48 kHz, mono or stereo, into a buffer we
own; it is called here through ``ctypes`` (the library PyAV's wheel bundles, or the
system's ``libopus.so.0``).  Without either, the same classes fall back to PyAV:
same results, more CPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fractions
import glob
import logging
import os
from typing import Any

import av

from .resample import Resampler

log = logging.getLogger("omni_rtc.media")

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
MAX_FRAME_MS = 120
MAX_PACKET_BYTES = 1500

_APPLICATION_VOIP = 2048
_SET_BITRATE = 4002
_OK = 0


class OpusError(ValueError):
    """libopus refused a packet or a setting."""


def _find_library() -> ctypes.CDLL | None:
    candidates: list[str] = []
    libs = os.path.join(os.path.dirname(os.path.dirname(av.__file__)), "av.libs")
    candidates += sorted(glob.glob(os.path.join(libs, "libopus*.so*")))  # PyAV's own copy
    system = ctypes.util.find_library("opus")
    if system:
        candidates.append(system)
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            _declare(lib)
        except (OSError, AttributeError):
            continue
        return lib
    return None


def _declare(lib: ctypes.CDLL) -> None:
    vp, i32, cp = ctypes.c_void_p, ctypes.c_int32, ctypes.c_char_p
    err_p = ctypes.POINTER(ctypes.c_int)
    lib.opus_decoder_create.restype = vp
    lib.opus_decoder_create.argtypes = [i32, ctypes.c_int, err_p]
    lib.opus_decoder_destroy.argtypes = [vp]
    lib.opus_decode.restype = ctypes.c_int
    lib.opus_decode.argtypes = [vp, cp, i32, vp, ctypes.c_int, ctypes.c_int]
    lib.opus_encoder_create.restype = vp
    lib.opus_encoder_create.argtypes = [i32, ctypes.c_int, ctypes.c_int, err_p]
    lib.opus_encoder_destroy.argtypes = [vp]
    lib.opus_encode.restype = i32
    lib.opus_encode.argtypes = [vp, cp, ctypes.c_int, vp, i32]
    lib.opus_encoder_ctl.restype = ctypes.c_int
    lib.opus_encoder_ctl.argtypes = [vp, ctypes.c_int, i32]


_lib: ctypes.CDLL | None = None
_searched = False


def libopus() -> ctypes.CDLL | None:
    """The loaded libopus, or None (then PyAV is used)."""
    global _lib, _searched
    if not _searched:
        _searched = True
        _lib = _find_library()
        if _lib is None:
            log.info("libopus not found for ctypes: Opus goes through PyAV (more CPU)")
    return _lib


def _check_rate(rate: int, channels: int) -> None:
    if rate not in OPUS_RATES:
        raise ValueError(f"Opus works at {OPUS_RATES} Hz, not {rate}")
    if channels not in (1, 2):
        raise ValueError("Opus here is mono or stereo")


class OpusDecoder:
    """Opus packets -> pcm16 (interleaved) at ``rate`` with ``channels``, statefully."""

    def __init__(self, rate: int, channels: int = 1, *, use_pyav: bool = False) -> None:
        _check_rate(rate, channels)
        self.rate = rate
        self.channels = channels
        lib = None if use_pyav else libopus()
        self._impl: _CtypesDecoder | _PyAvDecoder = (
            _CtypesDecoder(lib, rate, channels) if lib is not None else _PyAvDecoder(rate, channels)
        )

    @property
    def backend(self) -> str:
        return "libopus" if isinstance(self._impl, _CtypesDecoder) else "pyav"

    def decode(self, packet: bytes) -> bytes:
        """One packet -> its pcm16 (empty for an empty packet); :class:`OpusError` if corrupt."""
        if not packet:
            return b""
        return self._impl.decode(packet)


class _CtypesDecoder:
    def __init__(self, lib: ctypes.CDLL, rate: int, channels: int) -> None:
        err = ctypes.c_int()
        state = lib.opus_decoder_create(rate, channels, ctypes.byref(err))
        if err.value != _OK or not state:
            raise OpusError(f"opus_decoder_create failed ({err.value})")
        self._lib = lib
        self._state: Any = state
        self._channels = channels
        self._max_samples = rate * MAX_FRAME_MS // 1000
        self._buffer = ctypes.create_string_buffer(self._max_samples * channels * 2)

    def decode(self, packet: bytes) -> bytes:
        n = self._lib.opus_decode(
            self._state, packet, len(packet), self._buffer, self._max_samples, 0
        )
        if n < 0:
            raise OpusError(f"opus_decode failed ({n})")
        return ctypes.string_at(self._buffer, n * self._channels * 2)

    def __del__(self) -> None:
        state, self._state = getattr(self, "_state", None), None
        if state:
            self._lib.opus_decoder_destroy(state)


class _PyAvDecoder:
    def __init__(self, rate: int, channels: int) -> None:
        layout = "mono" if channels == 1 else "stereo"
        self._codec = av.CodecContext.create("libopus", "r")
        self._codec.format = "s16"
        self._codec.layout = layout
        self._codec.sample_rate = 48_000  # FFmpeg's libopus decodes at 48 kHz only
        self._resampler = Resampler(format="s16", layout=layout, rate=rate)

    def decode(self, packet: bytes) -> bytes:
        try:
            frames = self._codec.decode(av.Packet(packet))
        except av.FFmpegError as exc:
            raise OpusError(str(exc)) from None
        out = []
        for frame in frames:
            for resampled in self._resampler.resample(frame):
                channels = len(resampled.layout.channels)
                out.append(bytes(resampled.planes[0])[: resampled.samples * channels * 2])
        return b"".join(out)


class OpusEncoder:
    """pcm16 frames of exactly ``frame_ms`` at ``rate`` -> one Opus packet each (VoIP mode)."""

    def __init__(
        self,
        rate: int,
        channels: int = 1,
        *,
        bitrate: int = 48_000,
        frame_ms: int = 20,
        use_pyav: bool = False,
    ) -> None:
        _check_rate(rate, channels)
        if frame_ms not in (10, 20, 40, 60):
            raise ValueError("Opus frames here are 10, 20, 40 or 60 ms")
        self.rate = rate
        self.channels = channels
        self.bitrate = bitrate
        self.frame_samples = rate * frame_ms // 1000
        self.frame_bytes = self.frame_samples * channels * 2
        lib = None if use_pyav else libopus()
        self._impl: _CtypesEncoder | _PyAvEncoder = (
            _CtypesEncoder(lib, rate, channels, bitrate, self.frame_samples)
            if lib is not None
            else _PyAvEncoder(rate, channels, bitrate)
        )

    @property
    def backend(self) -> str:
        return "libopus" if isinstance(self._impl, _CtypesEncoder) else "pyav"

    def encode(self, pcm: bytes) -> bytes:
        if len(pcm) != self.frame_bytes:
            raise ValueError(f"an Opus frame here is {self.frame_bytes} bytes, got {len(pcm)}")
        return self._impl.encode(pcm)


class _CtypesEncoder:
    def __init__(
        self, lib: ctypes.CDLL, rate: int, channels: int, bitrate: int, frame_samples: int
    ) -> None:
        err = ctypes.c_int()
        state = lib.opus_encoder_create(rate, channels, _APPLICATION_VOIP, ctypes.byref(err))
        if err.value != _OK or not state:
            raise OpusError(f"opus_encoder_create failed ({err.value})")
        self._lib = lib
        self._state: Any = state
        if lib.opus_encoder_ctl(state, _SET_BITRATE, bitrate) != _OK:
            raise OpusError(f"libopus refused a bitrate of {bitrate}")
        self._frame_samples = frame_samples
        self._buffer = ctypes.create_string_buffer(MAX_PACKET_BYTES)

    def encode(self, pcm: bytes) -> bytes:
        n = self._lib.opus_encode(
            self._state, pcm, self._frame_samples, self._buffer, MAX_PACKET_BYTES
        )
        if n < 0:
            raise OpusError(f"opus_encode failed ({n})")
        return ctypes.string_at(self._buffer, n)

    def __del__(self) -> None:
        state, self._state = getattr(self, "_state", None), None
        if state:
            self._lib.opus_encoder_destroy(state)


class _PyAvEncoder:
    def __init__(self, rate: int, channels: int, bitrate: int) -> None:
        self._layout = "mono" if channels == 1 else "stereo"
        self._rate = rate
        self._channels = channels
        codec = av.CodecContext.create("libopus", "w")
        codec.format = "s16"
        codec.layout = self._layout
        codec.sample_rate = rate
        codec.bit_rate = bitrate
        codec.time_base = fractions.Fraction(1, rate)
        codec.options = {"application": "voip"}
        self._codec = codec
        self._pts = 0

    def encode(self, pcm: bytes) -> bytes:
        samples = len(pcm) // (2 * self._channels)
        frame = av.AudioFrame(format="s16", layout=self._layout, samples=samples)
        frame.planes[0].update(pcm)
        frame.sample_rate = self._rate
        frame.pts = self._pts
        self._pts += samples
        packets = self._codec.encode(frame)
        return b"".join(bytes(p) for p in packets)
