"""The aiohttp signaling server: web page, offers, call control, health and metrics."""

from .app import create_app

__all__ = ["create_app"]
