"""A protocol-faithful local stand-in for the Qwen-Omni Realtime service."""

from .server import Emulator, EmulatorConfig, ImageRecord, SessionRecord

__all__ = ["Emulator", "EmulatorConfig", "ImageRecord", "SessionRecord"]
