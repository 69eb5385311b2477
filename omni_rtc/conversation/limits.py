"""Cost limits of one call: a maximum length and an idle limit for silent callers.

Every minute of a call costs the operator; a caller who walked away, or a call left
open, must end on its own.  Renewed or reconnected sessions don't extend the length.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .events import Notice

if TYPE_CHECKING:
    from .core import Conversation

log = logging.getLogger("omni_rtc.call")

IDLE_WARNING_S = 15.0


@dataclass(frozen=True)
class CallLimits:
    max_call_seconds: float | None = 3600.0
    """None or 0: no limit."""
    idle_seconds: float | None = 300.0
    """End the call when neither side has spoken for this long (None or 0: never)."""
    tick_seconds: float = 1.0


async def enforce(conv: Conversation, limits: CallLimits) -> None:
    """Runs for the whole call; ends it with ``max_duration`` or ``idle``."""
    warned = False
    while True:
        await asyncio.sleep(limits.tick_seconds)
        now = time.monotonic()
        if limits.max_call_seconds and now - conv.started_at >= limits.max_call_seconds:
            log.info("call %s: reached its maximum length", conv.id)
            await conv.close("max_duration")
            return
        if not limits.idle_seconds:
            continue
        if conv.sink.playing:
            conv.activity()  # the model talking is not idleness
        idle = now - conv.last_activity
        if idle >= limits.idle_seconds:
            log.info("call %s: idle for %.0f s", conv.id, idle)
            await conv.close("idle")
            return
        warn_at = limits.idle_seconds - min(IDLE_WARNING_S, limits.idle_seconds / 2)
        if idle >= warn_at and not warned:
            warned = True
            left = limits.idle_seconds - idle
            conv.emit(Notice(f"Nobody has spoken for a while: the call ends in {left:.0f} s."))
        elif idle < warn_at:
            warned = False
