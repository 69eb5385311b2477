"""One 20 ms beat on an event loop for every call's outgoing audio (SIP and WebRTC)."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import ClassVar, Protocol

log = logging.getLogger("omni_rtc.media")


class Ticking(Protocol):
    """A call's sender: one 20 ms frame out per :meth:`tick`."""

    def tick(self) -> None: ...


class MediaClock:
    """One 20 ms beat for every call's outgoing RTP on an event loop.

    A timer per call costs a wake-up per call every 20 ms; one shared beat costs one in
    all. The beat keeps monotonic time from its start (no drift) and restarts its count
    if the loop fell more than 100 ms behind, rather than bursting to catch up.
    """

    FRAME_S = 0.02
    _clocks: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaClock]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self) -> None:
        self.endpoints: dict[int, Ticking] = {}
        self._failed: set[int] = set()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def of_running_loop(cls) -> MediaClock:
        loop = asyncio.get_running_loop()
        clock = cls._clocks.get(loop)
        if clock is None:
            clock = cls._clocks[loop] = cls()
        return clock

    def add(self, endpoint: Ticking) -> None:
        self.endpoints[id(endpoint)] = endpoint
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rtp-clock")

    async def remove(self, endpoint: Ticking) -> None:
        """Stop ticking ``endpoint``; the beat itself stops with the last one."""
        self.endpoints.pop(id(endpoint), None)
        self._failed.discard(id(endpoint))
        task = self._task
        if not self.endpoints and task is not None:
            self._task = None
            task.cancel()
            await asyncio.wait({task})  # a cancel aimed at the caller still reaches it

    async def _run(self) -> None:
        start = time.monotonic()
        beat = 0
        while self.endpoints:
            beat += 1
            due = start + beat * self.FRAME_S
            late = time.monotonic() - due
            if late > 0.1:
                start, beat = time.monotonic(), 0
            elif late < 0:
                await asyncio.sleep(-late)
            for key, endpoint in list(self.endpoints.items()):
                try:
                    endpoint.tick()
                except Exception:  # one call's trouble must not stop the others
                    if key not in self._failed:  # once per endpoint, not every 20 ms
                        self._failed.add(key)
                        log.exception("RTP send failed (further failures not logged)")
