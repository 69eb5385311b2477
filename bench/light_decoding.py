"""What light decoding (no loop filter on inter frames) saves, and what it costs in fidelity.

Run: ``python bench/light_decoding.py [CLIP.webm ...]`` (default: peer-bench's av.webm,
if set up, and a generated 640x480 30 fps VP8 clip: a pattern panned under camera-like
noise, a key frame a second).  For each clip: milliseconds of CPU a frame decoded in
full and light (FFmpeg's ``skip_loop_filter=nokey``, what a busy process switches to,
``omni_rtc/light_cameras.py``), and the PSNR (luma) of light against full decoding at
the 5th, 15th and 29th frame after each key frame (the 15th is where the second image
of a second comes from, for a sender with a key frame a second).  Harder clips to try:
``ffmpeg -f lavfi -i mandelbrot=size=640x480:rate=30 -t 10 -c:v libvpx -b:v 500k -g 30
-deadline realtime -cpu-used 8 mandelbrot.webm``.
"""

from __future__ import annotations

import fractions
import math
import sys
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

PEER_BENCH_CLIP = Path(__file__).resolve().parents[2] / "shared/peer-bench/media/av.webm"
AT = (5, 15, 29)


def generated_clip(seconds: int = 6) -> list[bytes]:
    """A panned pattern with per-frame noise, as libvpx encodes a webcam in real time."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = 640, 480, "yuv420p"
    codec.time_base = fractions.Fraction(1, 30)
    codec.gop_size = 30
    codec.bit_rate = 800_000
    codec.options = {"deadline": "realtime", "lag-in-frames": "0", "cpu-used": "8"}
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:600, 0:800]
    scene = (
        128 + 60 * np.sin(x / 23.0) * np.cos(y / 31.0) + 50 * ((x // 40 + y // 40) % 2)
    ).astype(np.float32)
    packets: list[bytes] = []
    for i in range(30 * seconds):
        dx, dy = int(80 + 60 * math.sin(i / 17)), int(60 + 40 * math.cos(i / 23))
        gray = scene[dy : dy + 480, dx : dx + 640] + rng.normal(0, 4, (480, 640))
        gray = np.clip(gray, 0, 255).astype(np.uint8)
        rgb = np.stack([gray, np.roll(gray, 7, axis=1), 255 - gray], axis=-1)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets += [bytes(p) for p in codec.encode(frame)]
    return packets + [bytes(p) for p in codec.encode(None)]


def clip_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def decoder(light: bool) -> Any:
    codec = av.CodecContext.create("vp8", "r")
    codec.thread_count = 1
    if light:
        codec.options = {"skip_loop_filter": "nokey"}
    return codec


def luma(packets: list[bytes], light: bool) -> list[np.ndarray]:
    codec = decoder(light)
    return [
        f.to_ndarray(format="gray").astype(np.float64)
        for data in packets
        for f in codec.decode(av.Packet(data))
    ]


def cpu_ms(packets: list[bytes], light: bool) -> float:
    """CPU milliseconds a frame, decoding only."""
    codec = decoder(light)
    start = time.process_time()
    for data in packets:
        codec.decode(av.Packet(data))
    return 1000 * (time.process_time() - start) / len(packets)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def report(name: str, packets: list[bytes]) -> None:
    keys = [i for i, p in enumerate(packets) if not p[0] & 1]
    full, light = luma(packets, light=False), luma(packets, light=True)
    # the best of 3, in turns: a shared machine's neighbours slow single runs by 2x
    timings = [(cpu_ms(packets, False), cpu_ms(packets, True)) for _ in range(3)]
    full_ms, light_ms = min(t[0] for t in timings), min(t[1] for t in timings)
    line = f"{name:28s} full {full_ms:.3f} ms  light {light_ms:.3f} ms ({light_ms / full_ms:.2f}x)"
    for k in AT:
        at = [psnr(full[key + k], light[key + k]) for key in keys if key + k < len(full)]
        if at:
            line += f"  frame {k}: {np.mean(at):.1f} dB (min {min(at):.1f})"
    print(line, flush=True)


def main() -> None:
    clips = [Path(p) for p in sys.argv[1:]]
    if not clips and PEER_BENCH_CLIP.exists():
        clips = [PEER_BENCH_CLIP]
    for path in clips:
        report(path.name, clip_packets(path))
    if len(sys.argv) == 1:
        report("generated (panned, noisy)", generated_clip())


if __name__ == "__main__":
    main()
