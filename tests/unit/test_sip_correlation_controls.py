"""The envelope correlation the baresip tests rely on separates speech from non-speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.baresip import delayed_correlation, pcm_envelope
from tests.helpers import decode_wav_mono


def test_delayed_correlation_finds_the_echo_and_rejects_controls(speech_wav: Path) -> None:
    speech, rate = decode_wav_mono(speech_wav.read_bytes())
    reference = pcm_envelope(speech, rate)
    delay = np.zeros(int(0.22 * rate), dtype=np.int16)
    echoed = np.concatenate([delay, (speech * 0.5).astype(np.int16)])
    assert delayed_correlation(reference, pcm_envelope(echoed, rate), 100) > 0.99
    reversed_ = np.concatenate([delay, speech[::-1]])
    noise = np.random.default_rng(1).normal(0, 3000, len(speech)).astype(np.int16)
    # reversed speech keeps its speech/silence layout: clearly below the tests' 0.8 all the same
    assert delayed_correlation(reference, pcm_envelope(reversed_, rate), 100) < 0.7
    assert delayed_correlation(reference, pcm_envelope(noise, rate), 100) < 0.5
