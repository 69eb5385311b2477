"""The registry of live calls, whatever their transport, and the shared capacity limit.

Kept behind this small interface so a pool of worker processes can own calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .loop_load import LoopLoad
from .metrics import Metrics

if TYPE_CHECKING:
    from .conversation.core import Conversation

log = logging.getLogger("omni_rtc.calls")


class CapacityError(Exception):
    """No room for another call right now."""

    def __init__(self, message: str, reason: str = "full") -> None:
        super().__init__(message)
        self.reason = reason
        """``full`` (--max-calls), ``overloaded`` (the event loop) or ``draining``."""


class OfferError(ValueError):
    """The offer could not be used (the caller's fault: HTTP 400)."""


@dataclass(frozen=True)
class CallOptions:
    """What a caller may choose per call (validated against the provider profile)."""

    voice: str | None = None
    instructions: str | None = None
    mode: str | None = None
    """``server_vad`` (hands-free) or ``manual`` (push-to-talk); None = server default."""


class Call(Protocol):
    """Anything the registry holds: a WebRTC call, a SIP call, a media stream, a pipe."""

    @property
    def id(self) -> str: ...

    @property
    def transport(self) -> str: ...

    @property
    def closed(self) -> asyncio.Event: ...

    @property
    def ended_reason(self) -> str | None: ...

    @property
    def conversation(self) -> Conversation: ...

    async def close(self, reason: str = "hangup") -> None: ...


class CallManager:
    def __init__(self, max_calls: int, metrics: Metrics, load: LoopLoad | None = None) -> None:
        self.max_calls = max_calls
        self.metrics = metrics
        self.load = load
        """Refuses new calls while this process's event loop has no time for them."""
        self._calls: dict[str, Call] = {}
        self._connecting = 0
        self.accepting = True
        self.empty = asyncio.Event()
        """Set while no call is running (a drain waits on it)."""
        self.empty.set()

    @property
    def active(self) -> int:
        return len(self._calls)

    @property
    def full(self) -> bool:
        return len(self._calls) + self._connecting >= self.max_calls

    @property
    def overloaded(self) -> bool:
        """Not full, but the event loop has no time for another call."""
        return (
            not self.full
            and self.load is not None
            and not self.load.has_room(settled=len(self._calls), starting=self._connecting)
        )

    @property
    def has_room(self) -> bool:
        return self.accepting and not self.full and not self.overloaded

    def get(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def list(self) -> list[Call]:
        return list(self._calls.values())

    @contextlib.contextmanager
    def reserve(self, transport: str) -> Iterator[None]:
        """Hold a slot while a call is being set up; :class:`CapacityError` when full."""
        if not self.has_room:
            if not self.accepting:
                why, reason = "this server is shutting down", "draining"
            elif self.full:
                why, reason = f"this server is at its limit of {self.max_calls} calls", "full"
            else:
                assert self.load is not None
                why = f"this server is overloaded ({self.load.describe()}); try again shortly"
                reason = "overloaded"
            counted = "overloaded" if reason == "overloaded" else "capacity"
            self.metrics.calls_failed.labels(transport, counted).inc()
            log.warning("%s call refused: %s", transport, why)
            raise CapacityError(why, reason)
        self._connecting += 1
        try:
            yield
        finally:
            self._connecting -= 1

    def add(self, call: Call) -> None:
        """Register a started call; it leaves the registry when it ends."""
        self._calls[call.id] = call
        if self.load is not None:
            self.load.taken(call.id)
        self.empty.clear()
        waiter = asyncio.ensure_future(call.closed.wait())
        waiter.add_done_callback(lambda _: self._forget(call.id))

    def _forget(self, call_id: str) -> None:
        self._calls.pop(call_id, None)
        if self.load is not None:
            self.load.gone(call_id)
        if not self._calls:
            self.empty.set()

    async def close(self, call_id: str, reason: str = "hangup") -> bool:
        call = self._calls.get(call_id)
        if call is None:
            return False
        await call.close(reason)
        self._forget(call_id)
        return True

    async def close_all(self, reason: str = "server_shutdown") -> None:
        self.accepting = False
        calls = list(self._calls.values())
        if calls:
            await asyncio.gather(*(c.close(reason) for c in calls), return_exceptions=True)
