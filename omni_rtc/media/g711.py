"""G.711 μ-law and A-law <-> pcm16, by table lookup, bit-exact with FFmpeg's codecs.

Telephone media streams carry 8-bit G.711; Python 3.13 removed ``audioop``. The decode
tables are the ITU expansion; the encode tables are built the way FFmpeg builds its
own (nearest quantisation level, 14-bit index), so PyAV's ``pcm_mulaw``/``pcm_alaw``
and these functions agree on every value (tests/unit/test_g711.py checks all 65,536).
A table lookup per chunk costs microseconds and keeps no state between chunks.
"""

from __future__ import annotations

import numpy as np

_BIAS = 0x84


def _ulaw_expand() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _BIAS - t, t - _BIAS).astype(np.int16)


def _alaw_expand() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    mantissa = a & 0x0F
    segment = (a & 0x70) >> 4
    t = np.where(
        segment > 0,
        (mantissa * 2 + 1 + 32) << (segment + 2),
        (mantissa * 2 + 1) << 3,
    )
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _compress_table(expand: np.ndarray, mask: int) -> np.ndarray:
    """Linear (14-bit index: sample + 32768 >> 2) -> code, as FFmpeg's build_xlaw_table."""
    table = np.empty(16384, dtype=np.uint8)
    table[8192] = mask
    j = 1
    for i in range(127):
        v1 = int(expand[i ^ mask])
        v2 = int(expand[(i + 1) ^ mask])
        v = (v1 + v2 + 4) >> 3
        if v > j:
            table[8192 - v + 1 : 8192 - j + 1] = i ^ (mask ^ 0x80)
            table[8192 + j : 8192 + v] = i ^ mask
            j = v
    table[1 : 8192 - j + 1] = 127 ^ (mask ^ 0x80)
    table[8192 + j :] = 127 ^ mask
    table[0] = table[1]
    return table


ULAW_TO_PCM = _ulaw_expand()
ALAW_TO_PCM = _alaw_expand()
_PCM_TO_ULAW = _compress_table(ULAW_TO_PCM, 0xFF)
_PCM_TO_ALAW = _compress_table(ALAW_TO_PCM, 0xD5)

ULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")


def ulaw_decode(data: bytes) -> bytes:
    """μ-law bytes -> pcm16 little-endian, one sample per byte."""
    return ULAW_TO_PCM[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


def alaw_decode(data: bytes) -> bytes:
    """A-law bytes -> pcm16 little-endian, one sample per byte."""
    return ALAW_TO_PCM[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


def ulaw_encode(pcm: bytes) -> bytes:
    """pcm16 little-endian -> μ-law (an odd trailing byte is ignored)."""
    index = (_samples(pcm).astype(np.int32) + 32768) >> 2
    return bytes(_PCM_TO_ULAW[index])


def alaw_encode(pcm: bytes) -> bytes:
    """pcm16 little-endian -> A-law (an odd trailing byte is ignored)."""
    index = (_samples(pcm).astype(np.int32) + 32768) >> 2
    return bytes(_PCM_TO_ALAW[index])
