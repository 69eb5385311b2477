import fractions

import av
import numpy as np
import pytest

from omni_rtc.media.audio_in import AudioIn

OUT_RATE = 16_000


def sine_frames(
    rate: int, layout: str, fmt: str, seconds: float = 2.0, frame_ms: int = 20, hz: float = 1000.0
):
    """A continuous 1 kHz sine cut into frames, as a decoder would deliver it."""
    channels = 2 if layout == "stereo" else 1
    per_frame = rate * frame_ms // 1000
    total = int(rate * seconds)
    pos = 0
    while pos < total:
        n = min(per_frame, total - pos)
        t = (np.arange(n) + pos) / rate
        x = 0.5 * np.sin(2 * np.pi * hz * t)
        if fmt == "s16":
            mono = (x * 32767).astype(np.int16)
            arr = np.repeat(mono[:, None], channels, axis=1).reshape(1, -1)  # packed
        elif fmt == "fltp":
            arr = np.repeat(x[None, :].astype(np.float32), channels, axis=0)  # planar
        else:
            raise ValueError(fmt)
        frame = av.AudioFrame.from_ndarray(arr, format=fmt, layout=layout)
        frame.sample_rate = rate
        frame.pts = pos
        frame.time_base = fractions.Fraction(1, rate)
        yield frame
        pos += n


def fit_sine(y: np.ndarray, rate: int, hz: float) -> tuple[float, float]:
    """Least-squares fit of one sinusoid; returns (amplitude, SNR in dB)."""
    n = np.arange(len(y))
    basis = np.stack([np.sin(2 * np.pi * hz * n / rate), np.cos(2 * np.pi * hz * n / rate)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    fitted = basis @ coef
    residual = y - fitted
    return float(np.hypot(*coef)), float(10 * np.log10(np.sum(fitted**2) / np.sum(residual**2)))


@pytest.mark.parametrize(
    ("rate", "layout", "fmt"),
    [
        (48_000, "stereo", "s16"),
        (48_000, "stereo", "fltp"),
        (44_100, "mono", "s16"),
        (8_000, "mono", "s16"),
    ],
)
def test_sine_keeps_frequency_snr_and_phase_across_chunks(rate: int, layout: str, fmt: str) -> None:
    audio_in = AudioIn(OUT_RATE, chunk_ms=20)
    chunks: list[bytes] = []
    for frame in sine_frames(rate, layout, fmt, frame_ms=10 if rate == 44_100 else 20):
        chunks += audio_in.push(frame)
    assert chunks
    assert all(len(c) == 640 for c in chunks)  # 20 ms of 16 kHz mono s16
    y = np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.float64) / 32767
    y = y[800:-800]  # skip the resampler's start-up transient
    # Dominant frequency from the spectrum
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak_hz = np.argmax(spectrum) * OUT_RATE / len(y)
    assert abs(peak_hz - 1000) < 2
    # One sinusoid fits the whole stream: frequency and phase are continuous across chunks
    amplitude, snr = fit_sine(y, OUT_RATE, 1000.0)
    assert snr >= 50, f"SNR {snr:.1f} dB"
    assert abs(amplitude - 0.5) < 0.01
    # ...and so does every single chunk boundary region
    for boundary in range(640, len(y) - 640, 320 * 7):
        _, local_snr = fit_sine(y[boundary - 64 : boundary + 64], OUT_RATE, 1000.0)
        assert local_snr >= 40


@pytest.mark.parametrize("chunk_ms", [20, 30, 40])
def test_chunk_size_follows_the_setting(chunk_ms: int) -> None:
    audio_in = AudioIn(OUT_RATE, chunk_ms=chunk_ms)
    chunks = [
        c for f in sine_frames(48_000, "stereo", "s16", seconds=1.0) for c in audio_in.push(f)
    ]
    assert {len(c) for c in chunks} == {OUT_RATE * chunk_ms // 1000 * 2}
    total = sum(map(len, chunks)) + len(audio_in.flush())
    assert abs(total / 2 - OUT_RATE) <= 32  # 1 s in, 1 s out


def test_format_change_mid_stream_is_handled() -> None:
    audio_in = AudioIn(OUT_RATE, chunk_ms=20)
    out = [c for f in sine_frames(48_000, "stereo", "s16", seconds=0.5) for c in audio_in.push(f)]
    out += [c for f in sine_frames(8_000, "mono", "s16", seconds=0.5) for c in audio_in.push(f)]
    total = sum(map(len, out)) + len(audio_in.flush())
    assert abs(total / 2 - OUT_RATE) <= 64


def test_other_output_rates_for_other_profiles() -> None:
    audio_in = AudioIn(24_000, chunk_ms=40)
    chunks = [
        c for f in sine_frames(48_000, "stereo", "s16", seconds=0.5) for c in audio_in.push(f)
    ]
    assert {len(c) for c in chunks} == {1920}


def test_invalid_chunk_setting() -> None:
    with pytest.raises(ValueError, match="chunk_ms"):
        AudioIn(OUT_RATE, chunk_ms=5)
