"""Realtime protocol: events as data, conversation state, profiles, and the client."""

from .client import RealtimeClient
from .errors import (
    AuthenticationFailed,
    HandshakeTimeout,
    ImageBeforeAudio,
    RealtimeError,
    SessionRejected,
    SessionTimeout,
    UpstreamClosed,
    UpstreamUnreachable,
)
from .profiles import (
    DASHSCOPE,
    OPENAI,
    PROFILES,
    BargeInStrategy,
    ModelInfo,
    ProviderProfile,
    get_profile,
)
from .session import ServerVad, SessionConfig
from .state import ConversationState

__all__ = [
    "DASHSCOPE",
    "OPENAI",
    "PROFILES",
    "AuthenticationFailed",
    "BargeInStrategy",
    "ConversationState",
    "HandshakeTimeout",
    "ImageBeforeAudio",
    "ModelInfo",
    "ProviderProfile",
    "RealtimeClient",
    "RealtimeError",
    "ServerVad",
    "SessionConfig",
    "SessionRejected",
    "SessionTimeout",
    "UpstreamClosed",
    "UpstreamUnreachable",
    "get_profile",
]
