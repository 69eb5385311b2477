"""What a conversation tells the caller's side, as typed values.

Transports turn these into their own wire format (the page's data-channel JSON, a log
line, a telephony hang-up); :meth:`to_message` gives the page's JSON shape, which is a
public interface and must not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

State = Literal["listening", "thinking", "speaking"]
Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class CallStarted:
    """The model session is open; the call can talk."""

    call_id: str
    mode: str
    voice: str | None
    model: str | None

    def to_message(self) -> dict[str, Any]:
        return {
            "type": "call",
            "call_id": self.call_id,
            "mode": self.mode,
            "voice": self.voice,
            "model": self.model,
        }


@dataclass(frozen=True)
class Transcript:
    """What one side said; assistant text streams (``final=False``) until the end."""

    role: Role
    text: str
    final: bool

    def to_message(self) -> dict[str, Any]:
        return {"type": "transcript", "role": self.role, "text": self.text, "final": self.final}


@dataclass(frozen=True)
class StateChanged:
    value: State

    def to_message(self) -> dict[str, Any]:
        return {"type": "state", "value": self.value}


@dataclass(frozen=True)
class Interrupted:
    """The caller talked over the reply: queued reply audio was dropped."""

    def to_message(self) -> dict[str, Any]:
        return {"type": "interrupted"}


@dataclass(frozen=True)
class CallError:
    """Something the caller should read; the call goes on unless :class:`Ended` follows."""

    message: str

    def to_message(self) -> dict[str, Any]:
        return {"type": "error", "message": self.message}


@dataclass(frozen=True)
class Notice:
    """Information, not a failure (e.g. the model session was renewed)."""

    message: str

    def to_message(self) -> dict[str, Any]:
        return {"type": "notice", "message": self.message}


@dataclass(frozen=True)
class Dtmf:
    """A key the caller pressed on a phone keypad (RFC 4733 or a media-stream event)."""

    digit: str
    duration_ms: int = 0

    def to_message(self) -> dict[str, Any]:
        return {"type": "dtmf", "digit": self.digit, "duration_ms": self.duration_ms}


@dataclass(frozen=True)
class Ended:
    """The conversation is over; nothing follows."""

    reason: str

    def to_message(self) -> dict[str, Any]:
        return {"type": "ended", "reason": self.reason}


ConversationEvent = (
    CallStarted | Transcript | StateChanged | Interrupted | CallError | Notice | Dtmf | Ended
)
