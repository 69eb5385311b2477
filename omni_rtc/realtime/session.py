"""The session configuration sent in ``session.update``, as plain data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ServerVad:
    """Server-side voice activity detection (hands-free mode)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 800

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
        }


@dataclass(frozen=True)
class SessionConfig:
    """What we ask of the realtime session; ``turn_detection=None`` means push-to-talk."""

    voice: str | None = None
    instructions: str | None = None
    modalities: tuple[str, ...] = ("text", "audio")
    input_audio_format: str = "pcm16"
    output_audio_format: str = "pcm16"
    transcription_model: str | None = None
    turn_detection: ServerVad | None = field(default_factory=ServerVad)
    sampling: Mapping[str, Any] = field(default_factory=dict)

    @property
    def manual(self) -> bool:
        return self.turn_detection is None

    def to_dict(self) -> dict[str, Any]:
        session: dict[str, Any] = {
            "modalities": list(self.modalities),
            "input_audio_format": self.input_audio_format,
            "output_audio_format": self.output_audio_format,
            "input_audio_transcription": (
                {"model": self.transcription_model} if self.transcription_model else None
            ),
            "turn_detection": self.turn_detection.to_dict() if self.turn_detection else None,
        }
        if self.voice:
            session["voice"] = self.voice
        if self.instructions:
            session["instructions"] = self.instructions
        session.update(self.sampling)
        return session
