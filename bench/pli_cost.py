"""What asking a camera for key frames costs: bits, and the decoding it saves.

Run: ``python bench/pli_cost.py``.  aiortc's own VP8 encoder (what an aiortc sender
uses; it answers every PLI with a key frame on its next frame, no rate limit) encodes
the same 640x480 30 fps moving pattern three ways: key frames only at the start, a key
frame every 0.5 s (what answering our PLIs before each of 2 images a second amounts to),
and a key frame every 1 s.  Printed: bytes a second, and the decoding CPU our
:class:`~omni_rtc.media.video_gate.DecodeGate` needs for 2 images a second in each case.
Chromium answers at most one PLI per 300 ms (libwebrtc ``EncoderRtcpFeedback``,
``kMinKeyframeSendIntervalMs``), so 2 a second pass.
"""

from __future__ import annotations

import fractions
import math
import time

import av
import numpy as np
from aiortc.codecs.vpx import Vp8Encoder

from omni_rtc.media.video_gate import DecodeGate, is_key_frame

FPS = 30
SECONDS = 6
WIDTH, HEIGHT = 640, 480


def frames() -> list[av.VideoFrame]:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    out = []
    for i in range(FPS * SECONDS):
        rgb = np.stack(
            [(x + 4 * i) % 256, (y + 2 * i) % 256, ((x // 40 + y // 40 + i // 10) % 2) * 200],
            axis=-1,
        ).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = i * 3000
        frame.time_base = fractions.Fraction(1, 90_000)
        out.append(frame)
    return out


def encode(source: list[av.VideoFrame], key_every: int) -> list[bytes]:
    encoder = Vp8Encoder()
    encoded = []
    for i, frame in enumerate(source):
        frame.pict_type = av.video.frame.PictureType.NONE  # aiortc marks forced key frames
        force = key_every > 0 and i % key_every == 0 and i > 0
        payloads, _ = encoder.encode(frame, force_keyframe=force)
        # strip the 4-byte VP8 payload descriptors aiortc adds (first packet: S bit)
        encoded.append(b"".join(p[4:] for p in payloads))
    return encoded


def gated_decode(
    stream: list[bytes], source: list[av.VideoFrame], honours_pli: bool
) -> tuple[float, int, float]:
    """Decode what the gate asks for (2 images a second): CPU seconds, frames decoded,
    and the mean PSNR (luma, dB) of the images against the camera's frames."""
    gate = DecodeGate()
    codec = av.CodecContext.create("vp8", "r")
    codec.thread_count = 1
    due, spent, decoded, psnr = -math.inf, 0.0, 0, []
    for i, data in enumerate(stream):
        now = i / FPS
        decode, _ = gate.on_frame(now, bool(is_key_frame("video/vp8", data)), due, 0.5)
        if honours_pli and gate.pli_state == "unknown" and i > 60:
            gate.pli_state = "honoured"  # as learnt from probes
        if decode:
            started = time.process_time()
            out = codec.decode(av.Packet(data))
            spent += time.process_time() - started
            decoded += 1
            if now >= due and out:
                due = now + 0.5
                got = out[0].to_ndarray(format="gray").astype(np.float64)
                want = source[i].to_ndarray(format="gray").astype(np.float64)
                error = max(float(np.mean((got - want) ** 2)), 1e-9)
                psnr.append(10 * math.log10(255**2 / error))
    return spent, decoded, float(np.mean(psnr))


def main() -> None:
    source = frames()
    for label, key_every in (
        ("key frames on request only", 0),
        ("a key frame every 0.5 s (PLI before each image)", FPS // 2),
        ("a key frame every 1 s", FPS),
    ):
        stream = encode(source, key_every)
        per_second = sum(len(f) for f in stream) / SECONDS
        keys = sum(1 for f in stream if is_key_frame("video/vp8", f))
        cpu, decoded, psnr = gated_decode(stream, source, honours_pli=key_every == FPS // 2)
        key_sizes = [len(f) for f in stream if is_key_frame("video/vp8", f)]
        inter_sizes = [len(f) for f in stream if not is_key_frame("video/vp8", f)]
        print(
            f"{label}: {per_second * 8 / 1000:.0f} kbit/s, {keys} key frames, "
            f"mean key frame {np.mean(key_sizes):.0f} B, inter {np.mean(inter_sizes):.0f} B; "
            f"decoded {decoded}/{len(stream)} frames, {cpu / SECONDS * 1000:.1f} ms CPU a "
            f"second; images {psnr:.1f} dB PSNR"
        )


if __name__ == "__main__":
    main()
