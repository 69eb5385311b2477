"""The examples run to completion offline (built-in emulator) and do what they say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.helpers import decode_wav_mono
from tests.media import best_circular_correlation, envelope

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(*args: str, timeout: float = 90) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin"},  # no API key: offline on the emulator
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def test_pcm_pipe_writes_the_reply_at_8khz(speech_wav: Path, tmp_path: Path) -> None:
    out = tmp_path / "reply.wav"
    stdout = run_example("pcm_pipe.py", str(speech_wav), str(out))
    reply, rate = decode_wav_mono(out.read_bytes())
    assert rate == 8000
    said, said_rate = decode_wav_mono(speech_wav.read_bytes())
    # the emulator echoes the utterance: the reply's envelope is the speech's
    said8k = said[:: said_rate // 8000].astype("<i2").tobytes()
    reference = envelope(said8k, 8000)
    heard = envelope(reply.astype("<i2").tobytes(), 8000)
    padded = np.concatenate([heard, np.full(max(0, len(reference) - len(heard)), heard.min())])
    assert best_circular_correlation(reference, padded) > 0.8
    assert "assistant: I heard" in stdout
    assert "[speaking]" in stdout


def test_embed_aiohttp_self_test() -> None:
    stdout = run_example("embed_aiohttp.py", "--self-test")
    assert '"type": "call"' in stdout
    assert "hang-up HTTP 204" in stdout


def test_own_peer_connection() -> None:
    stdout = run_example("own_peer_connection.py")
    assert "assistant: I heard" in stdout
    assert "the caller heard" in stdout
