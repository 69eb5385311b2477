"""What an emulated session received: tests inspect it, logs summarise it."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import INPUT_RATE


@dataclass
class ImageRecord:
    at: float
    nbytes: int
    width: int = 0
    height: int = 0
    accepted: bool = True
    error: str = ""


RECORD_EVENTS = 5000


@dataclass
class SessionRecord:
    """What one connection sent and received; tests inspect it, logs summarise it.

    Bounded: the last ``record_seconds`` of input audio and the last few thousand events,
    so a long offline-mode call doesn't grow without end.
    """

    session_id: str
    model: str
    peer: str
    record_seconds: float = 120.0
    started: float = field(default_factory=time.monotonic)
    audio: bytearray = field(default_factory=bytearray)
    audio_seconds_total: float = 0.0
    first_audio_at: float | None = None
    append_bytes: deque[int] = field(default_factory=lambda: deque(maxlen=RECORD_EVENTS))
    """The size of each audio append (the bridge's chunk size), latest last."""
    images: deque[ImageRecord] = field(default_factory=lambda: deque(maxlen=RECORD_EVENTS))
    client_events: deque[str] = field(default_factory=lambda: deque(maxlen=RECORD_EVENTS))
    server_events: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=RECORD_EVENTS)
    )
    responses: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    abort: Callable[[], None] = field(default=lambda: None, repr=False)
    """Fault injection: drop this session's TCP connection now."""

    def add_audio(self, pcm: bytes, now: float) -> None:
        if self.first_audio_at is None:
            self.first_audio_at = now
        self.append_bytes.append(len(pcm))
        self.audio_seconds_total += len(pcm) / 2 / INPUT_RATE
        self.audio += pcm
        limit = int(self.record_seconds * INPUT_RATE) * 2
        if len(self.audio) > limit + INPUT_RATE * 2 * 10:  # trim in 10 s steps
            del self.audio[: len(self.audio) - limit]

    def server_types(self) -> list[str]:
        return [str(e.get("type")) for e in self.server_events]
