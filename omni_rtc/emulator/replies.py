"""What the emulated model says: reply audio, its transcript, and token usage (pure)."""

from __future__ import annotations

import math
import secrets
import string
from dataclasses import dataclass, field

import av
import numpy as np

from ..media.resample import Resampler

ALPHANUMERIC = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """Ids shaped like the service's: ``event_``, ``item_`` … + 21 alphanumerics."""
    return prefix + "_" + "".join(secrets.choice(ALPHANUMERIC) for _ in range(21))


def tone(seconds: float, rate: int, hz: float = 440.0, amplitude: float = 0.3) -> bytes:
    """A sine with 10 ms fades, as pcm16 mono."""
    n = max(0, int(seconds * rate))
    t = np.arange(n) / rate
    wave = amplitude * np.sin(2 * math.pi * hz * t)
    fade = min(n // 2, rate // 100)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[n - fade :] *= ramp[::-1]
    return (wave * 32767).astype("<i2").tobytes()


def resample_pcm16(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample a whole mono pcm16 clip with PyAV (swresample)."""
    if from_rate == to_rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = from_rate
    resampler = Resampler(format="s16", layout="mono", rate=to_rate)
    out = resampler.resample(frame) + resampler.resample(None)
    return b"".join(bytes(f.planes[0])[: f.samples * 2] for f in out)


@dataclass
class UserTurn:
    """What the user gave the model in one committed turn."""

    audio: bytes = b""
    sample_rate: int = 16_000
    images: list[tuple[int, int]] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return len(self.audio) / 2 / self.sample_rate


def describe(turn: UserTurn | None) -> str:
    """The assistant's words: what it actually received (handy when debugging a bridge)."""
    if turn is None:
        return "I have not heard anything new."
    text = f"I heard {turn.seconds:.1f} seconds of audio"
    n = len(turn.images)
    if n:
        w, h = turn.images[-1]
        text += f" and {n} image{'s' if n != 1 else ''}, the last {w}×{h}"
    return text + "."


def user_transcript(turn: UserTurn) -> str:
    """The emulator cannot recognise speech; it says honestly what it got."""
    return f"[{turn.seconds:.1f} s of speech]"


def split_deltas(text: str, parts: int) -> list[str]:
    """Split text into ``parts`` word-aligned deltas that join back to ``text``."""
    words = text.split(" ")
    parts = max(1, min(parts, len(words)))
    bounds = [round(i * len(words) / parts) for i in range(parts + 1)]
    chunks = [" ".join(words[bounds[i] : bounds[i + 1]]) for i in range(parts)]
    return [c + (" " if i < parts - 1 else "") for i, c in enumerate(chunks)]


def usage(turn: UserTurn | None, reply_text: str, reply_seconds: float) -> dict[str, object]:
    """Token usage in the service's shape (plural ``*_tokens_details``)."""
    audio_in = round((turn.seconds if turn else 0.0) * 25)
    image_in = 64 * (len(turn.images) if turn else 0)
    text_in = 20
    text_out = max(1, len(reply_text.split()))
    audio_out = round(reply_seconds * 12.5)
    return {
        "total_tokens": audio_in + image_in + text_in + text_out + audio_out,
        "input_tokens": audio_in + image_in + text_in,
        "output_tokens": text_out + audio_out,
        "input_tokens_details": {
            "text_tokens": text_in,
            "audio_tokens": audio_in,
            "image_tokens": image_in,
        },
        "output_tokens_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }
