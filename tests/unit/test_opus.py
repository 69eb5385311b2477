"""libopus through ctypes (and the PyAV fallback): rates, round trips, errors."""

import fractions

import av
import numpy as np
import pytest
from aiortc.codecs.opus import OpusEncoder as AiortcOpusEncoder

from omni_rtc.media.opus import OpusDecoder, OpusEncoder, OpusError, libopus
from tests.helpers import best_correlation

BACKENDS = [False, True]  # use_pyav


def tone(rate: int, seconds: float, freq: float = 440.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * 8000).astype("<i2").tobytes()


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def test_libopus_is_found_for_ctypes() -> None:
    # PyAV's wheel bundles libopus; without it every call pays PyAV's 48 kHz decode path
    assert libopus() is not None
    assert OpusDecoder(16_000).backend == "libopus"
    assert OpusEncoder(24_000).backend == "libopus"


@pytest.mark.parametrize("encoder_pyav", BACKENDS)
@pytest.mark.parametrize("decoder_pyav", BACKENDS)
def test_voice_at_24k_comes_back_at_16k(encoder_pyav: bool, decoder_pyav: bool) -> None:
    encoder = OpusEncoder(24_000, bitrate=48_000, use_pyav=encoder_pyav)
    decoder = OpusDecoder(16_000, use_pyav=decoder_pyav)
    pcm = tone(24_000, 1.0)
    packets = [encoder.encode(pcm[i : i + 960]) for i in range(0, len(pcm), 960)]
    assert len(packets) == 50
    assert all(0 < len(p) < 400 for p in packets)  # ~48 kbit/s: ~120 bytes a packet
    out = b"".join(decoder.decode(p) for p in packets)
    assert abs(len(out) - 16_000 * 2) <= 64  # 1 s at 16 kHz (PyAV: minus resampler delay)
    reference = samples(tone(16_000, 1.0))[4000:12000]
    got = samples(out)[4000 - 200 : 12000]
    assert best_correlation(reference, got, 200) > 0.95


def test_decodes_aiortc_stereo_packets_to_mono_at_any_opus_rate() -> None:
    encoder = AiortcOpusEncoder()
    pcm = tone(48_000, 0.5, 300.0)
    packets = []
    for i in range(0, len(pcm), 1920):
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(pcm[i : i + 1920])
        frame.sample_rate = 48_000
        frame.pts = i // 2
        frame.time_base = fractions.Fraction(1, 48_000)
        payloads, _ = encoder.encode(frame)
        packets += payloads
    for rate in (8000, 12000, 16000, 24000, 48000):
        decoder = OpusDecoder(rate)
        out = [decoder.decode(p) for p in packets]
        assert all(len(chunk) == rate // 50 * 2 for chunk in out)  # 20 ms mono each
        assert np.abs(samples(b"".join(out)[len(out[0]) * 5 :])).max() > 4000


def test_corrupt_packets_raise_opus_error_and_the_decoder_goes_on() -> None:
    decoder = OpusDecoder(16_000)
    good = OpusEncoder(16_000).encode(bytes(640))
    with pytest.raises(OpusError):
        decoder.decode(b"\xff\xff\xff")  # code 3 packet with an impossible frame count
    assert decoder.decode(b"") == b""
    assert len(decoder.decode(good)) == 640


def test_rejects_rates_and_sizes_opus_does_not_have() -> None:
    with pytest.raises(ValueError, match="Opus works at"):
        OpusDecoder(22_050)
    with pytest.raises(ValueError, match="Opus works at"):
        OpusEncoder(44_100)
    with pytest.raises(ValueError, match="bytes"):
        OpusEncoder(24_000).encode(bytes(100))
    with pytest.raises(ValueError, match="mono or stereo"):
        OpusDecoder(16_000, channels=3)
