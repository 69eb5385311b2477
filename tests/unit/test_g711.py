"""G.711 tables agree with FFmpeg's pcm_mulaw / pcm_alaw codecs on every value."""

from __future__ import annotations

import av
import numpy as np
import pytest

from omni_rtc.media import g711

CODECS = {
    "pcm_mulaw": (g711.ulaw_encode, g711.ulaw_decode),
    "pcm_alaw": (g711.alaw_encode, g711.alaw_decode),
}


def pyav_encode(codec_name: str, samples: np.ndarray) -> bytes:
    codec = av.CodecContext.create(codec_name, "w")
    codec.sample_rate, codec.format, codec.layout = 8000, "s16", "mono"
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 8000
    return b"".join(bytes(p) for p in codec.encode(frame))


def pyav_decode(codec_name: str, data: bytes) -> np.ndarray:
    codec = av.CodecContext.create(codec_name, "r")
    codec.sample_rate, codec.layout = 8000, "mono"
    return np.concatenate([f.to_ndarray().reshape(-1) for f in codec.decode(av.Packet(data))])


@pytest.mark.parametrize("codec_name", CODECS)
def test_every_sample_encodes_as_ffmpeg_does(codec_name: str) -> None:
    every = np.arange(-32768, 32768, dtype=np.int16)
    encode, _ = CODECS[codec_name]
    assert encode(every.astype("<i2").tobytes()) == pyav_encode(codec_name, every)


@pytest.mark.parametrize("codec_name", CODECS)
def test_every_code_decodes_as_ffmpeg_does(codec_name: str) -> None:
    _, decode = CODECS[codec_name]
    codes = bytes(range(256))
    ours = np.frombuffer(decode(codes), dtype="<i2")
    assert np.array_equal(ours, pyav_decode(codec_name, codes))


@pytest.mark.parametrize("codec_name", CODECS)
def test_chunks_of_any_size_round_trip_within_the_quantisation_step(codec_name: str) -> None:
    rng = np.random.default_rng(7)
    t = np.arange(8000) / 8000
    speechlike = (8000 * np.sin(2 * np.pi * 300 * t) * rng.uniform(0.2, 1, t.size)).astype("<i2")
    encode, decode = CODECS[codec_name]
    pcm = speechlike.tobytes()
    pieces = [pcm[i : i + 322] for i in range(0, len(pcm), 322)]  # 161 samples each
    coded = b"".join(encode(p) for p in pieces)
    assert coded == encode(pcm)  # stateless: chunking changes nothing
    back = np.frombuffer(decode(coded), dtype="<i2").astype(np.int32)
    error = np.abs(back - speechlike.astype(np.int32))
    assert np.all(error <= np.abs(speechlike.astype(np.int32)) // 16 + 16)


def test_silence_codes_and_odd_bytes() -> None:
    assert g711.ulaw_encode(bytes(4)) == bytes([g711.ULAW_SILENCE]) * 2
    assert g711.alaw_encode(bytes(4)) == bytes([g711.ALAW_SILENCE]) * 2
    assert g711.ulaw_decode(bytes([g711.ULAW_SILENCE])) == bytes(2)
    assert g711.ulaw_encode(b"\x00\x00\x00") == bytes([g711.ULAW_SILENCE])
