"""The transport-agnostic conversation core: one realtime session per call."""

from .core import Conversation
from .events import (
    CallError,
    CallStarted,
    ConversationEvent,
    Dtmf,
    Ended,
    Interrupted,
    Notice,
    StateChanged,
    Transcript,
)
from .sinks import PcmReplyQueue, ReplySink

__all__ = [
    "CallError",
    "CallStarted",
    "Conversation",
    "ConversationEvent",
    "Dtmf",
    "Ended",
    "Interrupted",
    "Notice",
    "PcmReplyQueue",
    "ReplySink",
    "StateChanged",
    "Transcript",
]
