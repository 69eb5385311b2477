"""omni-rtc: a WebRTC bridge to Qwen-Omni Realtime and other OpenAI-Realtime-style models."""

__version__ = "0.1.0"
