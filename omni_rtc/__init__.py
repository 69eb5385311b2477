"""omni-rtc: a bridge between callers (WebRTC, SIP, media streams, your own audio) and
Qwen-Omni Realtime or other OpenAI-Realtime-style models.

The public API: :class:`Bridge` (settings, calls, capacity, metrics, HTTP routes),
:class:`Conversation` (one model session, transport-agnostic) and its events, and
:class:`AudioPipe` (your program's own audio in and out).  Names load on first use, so
``omni-rtc healthcheck`` does not pay for importing aiortc.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .bridge import Bridge
    from .calls import CallOptions, CapacityError, OfferError
    from .config import Settings
    from .conversation import (
        CallError,
        CallStarted,
        Conversation,
        ConversationEvent,
        Dtmf,
        Ended,
        Interrupted,
        Notice,
        PcmReplyQueue,
        ReplySink,
        StateChanged,
        Transcript,
    )
    from .transports.pipe import AudioPipe
    from .transports.webrtc import WebRtcCall

_EXPORTS = {
    "AudioPipe": ".transports.pipe",
    "Bridge": ".bridge",
    "CallError": ".conversation",
    "CallOptions": ".calls",
    "CallStarted": ".conversation",
    "CapacityError": ".calls",
    "Conversation": ".conversation",
    "ConversationEvent": ".conversation",
    "Dtmf": ".conversation",
    "Ended": ".conversation",
    "Interrupted": ".conversation",
    "Notice": ".conversation",
    "OfferError": ".calls",
    "PcmReplyQueue": ".conversation",
    "ReplySink": ".conversation",
    "Settings": ".config",
    "StateChanged": ".conversation",
    "Transcript": ".conversation",
    "WebRtcCall": ".transports.webrtc",
}

__all__ = [
    "AudioPipe",
    "Bridge",
    "CallError",
    "CallOptions",
    "CallStarted",
    "CapacityError",
    "Conversation",
    "ConversationEvent",
    "Dtmf",
    "Ended",
    "Interrupted",
    "Notice",
    "OfferError",
    "PcmReplyQueue",
    "ReplySink",
    "Settings",
    "StateChanged",
    "Transcript",
    "WebRtcCall",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'omni_rtc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
