"""Test media generated on the fly (never committed): espeak-ng speech via sox."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from tests.helpers import decode_wav_mono

PHRASE = "Hello, can you see me? One, two, three."


def require_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise RuntimeError(
            f"missing system tools: {', '.join(missing)} (tests/run installs them with apt-get)"
        )


def make_speech_wav(directory: Path, *, lead_s: float = 0.3, tail_s: float = 1.2) -> Path:
    """espeak-ng speech, 48 kHz mono s16, padded so server VAD ends each loop's turn."""
    require_tools("espeak-ng", "sox")
    raw = directory / "raw.wav"
    out = directory / "speech48k.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), PHRASE], check=True)
    subprocess.run(
        [
            "sox",
            str(raw),
            "-r",
            "48000",
            "-b",
            "16",
            "-c",
            "1",
            str(out),
            "pad",
            str(lead_s),
            str(tail_s),
            "norm",
            "-3",
        ],
        check=True,
    )
    return out


def load_pcm48(path: Path) -> bytes:
    samples, rate = decode_wav_mono(path.read_bytes())
    assert rate == 48_000, rate
    return samples.astype("<i2").tobytes()


def envelope(pcm: bytes, rate: int, frame_ms: int = 20) -> np.ndarray:
    """20 ms log-energy envelope."""
    x = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float64)
    n = rate * frame_ms // 1000
    frames = x[: len(x) // n * n].reshape(-1, n)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1.0)


def best_circular_correlation(reference: np.ndarray, received: np.ndarray) -> float:
    """Pearson r between one loop of ``received`` and ``reference`` at the best circular lag."""
    n = len(reference)
    if len(received) < n:
        raise AssertionError(f"received {len(received)} frames, need at least {n}")
    window = received[-n:]
    best = -1.0
    for lag in range(n):
        r = float(np.corrcoef(np.roll(reference, lag), window)[0, 1])
        best = max(best, r)
    return best
