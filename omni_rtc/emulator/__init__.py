"""A protocol-faithful local stand-in for the Qwen-Omni Realtime service."""

from .config import EmulatorConfig
from .record import ImageRecord, SessionRecord
from .server import Emulator

__all__ = ["Emulator", "EmulatorConfig", "ImageRecord", "SessionRecord"]
