"""JPEG encoding under size limits, and JPEG inspection, with PyAV's mjpeg codec.

Both are CPU work: call them from an executor, never on the event loop.
"""

from __future__ import annotations

import fractions
import threading
from dataclasses import dataclass

import av

JPEG_COLOR_RANGE = 2  # AVCOL_RANGE_JPEG: full-range YUV, what JPEG expects
QUALITY_STEPS = (3, 4, 6, 8, 11, 15, 20, 26, 31)
"""mjpeg qscale values, best first; 31 is the coarsest the encoder takes."""
HARD_MAX_BYTES = 500_000
HARD_MAX_SIZE = (1920, 1080)


class InvalidImage(ValueError):
    """Bytes that are not a decodable JPEG."""


@dataclass(frozen=True)
class JpegLimits:
    max_width: int = 1280
    max_height: int = 720
    max_bytes: int = 180_000

    def __post_init__(self) -> None:
        if not (
            16 <= self.max_width <= HARD_MAX_SIZE[0] and 16 <= self.max_height <= HARD_MAX_SIZE[1]
        ):
            raise ValueError(
                f"JPEG size limit must be within 16x16..{HARD_MAX_SIZE[0]}x{HARD_MAX_SIZE[1]}"
            )
        if not 4_000 <= self.max_bytes <= HARD_MAX_BYTES:
            raise ValueError(f"JPEG byte budget must be within 4000..{HARD_MAX_BYTES}")


@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    width: int
    height: int
    qscale: int


def fit_within(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """Scale (never up) to fit the box, keeping the aspect ratio; even sizes for 4:2:0."""
    scale = min(1.0, max_width / width, max_height / height)
    w = max(2, int(width * scale) // 2 * 2)
    h = max(2, int(height * scale) // 2 * 2)
    return w, h


class _Mjpeg:
    """One open mjpeg encoder for a size and quality: JPEG is intra-only, so a context
    encodes frame after frame, each packet a whole image (opening one per image cost a
    sixth of the encoding)."""

    def __init__(self, width: int, height: int, qscale: int) -> None:
        self.key = (width, height, qscale)
        codec = av.CodecContext.create("mjpeg", "w")
        codec.width = width
        codec.height = height
        codec.pix_fmt = "yuv420p"
        codec.color_range = JPEG_COLOR_RANGE
        codec.time_base = fractions.Fraction(1, 2)
        codec.options = {"qmin": str(qscale), "qmax": str(qscale)}
        codec.thread_count = 1  # a few ms an image: no slice threads held for the call
        self.codec = codec
        self._pts = 0

    def encode(self, frame: av.VideoFrame) -> bytes:
        width, height, _ = self.key
        scaled = frame.reformat(
            width=width, height=height, format="yuv420p", dst_color_range=JPEG_COLOR_RANGE
        )
        scaled.pts = self._pts
        scaled.time_base = self.codec.time_base
        self._pts += 1
        data = b"".join(bytes(p) for p in self.codec.encode(scaled))
        if not data.startswith(b"\xff\xd8"):
            raise InvalidImage("the JPEG encoder returned no image")
        return data


class JpegEncoder:
    """Encodes frames to JPEG within :class:`JpegLimits`.

    Remembers the quality that last fit, so a steady camera costs one encode per frame
    instead of a search; lowers quality, then resolution, until the budget is met.
    """

    def __init__(self, limits: JpegLimits | None = None) -> None:
        self.limits = limits or JpegLimits()
        self._step = 1
        self._contexts: dict[tuple[int, int, int], _Mjpeg] = {}
        """Open encoders by (width, height, qscale): the search tries two qualities an
        image (one better than the last that fit, then that one), all kept; a new size
        drops the others."""
        self._lock = threading.Lock()  # one encode at a time per encoder (its contexts)

    def _encode_once(self, frame: av.VideoFrame, width: int, height: int, qscale: int) -> bytes:
        key = (width, height, qscale)
        mjpeg = self._contexts.get(key)
        if mjpeg is None:
            if any(k[:2] != (width, height) for k in self._contexts):
                self._contexts.clear()
            mjpeg = self._contexts[key] = _Mjpeg(width, height, qscale)
        try:
            return mjpeg.encode(frame)
        except av.FFmpegError as exc:
            del self._contexts[key]  # never reuse a context that failed
            raise InvalidImage(f"the frame did not encode: {exc}") from None

    def encode(self, frame: av.VideoFrame) -> EncodedImage:
        with self._lock:
            return self._encode(frame)

    def _encode(self, frame: av.VideoFrame) -> EncodedImage:
        width, height = fit_within(
            frame.width, frame.height, self.limits.max_width, self.limits.max_height
        )
        step = max(0, self._step - 1)  # try one notch better than last time
        while True:
            qscale = QUALITY_STEPS[step]
            data = self._encode_once(frame, width, height, qscale)
            if len(data) <= self.limits.max_bytes:
                self._step = step
                return EncodedImage(data, width, height, qscale)
            if step + 1 < len(QUALITY_STEPS):
                step += 1
                continue
            if width <= 64 or height <= 64:
                raise InvalidImage(
                    f"cannot fit a {frame.width}x{frame.height} frame in "
                    f"{self.limits.max_bytes} bytes"
                )
            width, height = fit_within(width, height, int(width * 0.7), int(height * 0.7))
            step = len(QUALITY_STEPS) // 2


def inspect_jpeg(data: bytes) -> tuple[int, int]:
    """Decode a JPEG and return ``(width, height)``; :class:`InvalidImage` if it isn't one."""
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        raise InvalidImage("not a JPEG (missing SOI marker)")
    codec = av.CodecContext.create("mjpeg", "r")
    try:
        frames = codec.decode(av.Packet(data)) + codec.decode(None)
    except av.FFmpegError as exc:
        raise InvalidImage(f"corrupt JPEG: {exc}") from None
    if not frames:
        raise InvalidImage("corrupt JPEG: nothing decoded")
    frame = frames[0]
    assert isinstance(frame, av.VideoFrame)
    return frame.width, frame.height
