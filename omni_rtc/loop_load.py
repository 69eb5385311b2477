"""How full this process's event loop is: the sign that it holds as many calls as it can.

Every call's media runs on one event loop, so one core is the limit of a process.  Two
signs that it is reached, both over the last two seconds: the loop thread's CPU time
(how busy it is), and how late a sleeping task wakes (the median lag: under a
millisecond while the loop has time to spare; many milliseconds when it is saturated, or
when other processes take its core).  Measured with peer-bench's A/V calls on one core:
at 16 calls the loop is 73% busy and its median lag 0.7 ms; at 24 it is 99% busy, 18-30
ms late, and calls miss real time.  A call added then takes the others down with it, so
the bridge refuses new calls (503 + Retry-After; the front tries another worker) while
the loop is over its limit, until it is well under it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("omni_rtc.load")

TICK_S = 0.05
WINDOW_S = 2.0
MAX_LAG_S = 0.010
"""A loop this late (median) is overloaded whatever its own CPU time."""
CLEAR_BUSY = 0.10
"""Overload ends once the loop is this much (share of its core) under the limit..."""
CLEAR_LAG_S = 0.003
"""...and its median lag is under this."""
RAMP_S = 3.0
"""A call starts costing its share a second or two after it is taken (ICE, DTLS, then
its first key frame): until then it is counted at the average cost of a call."""


class LoopLoad:
    """The event loop's busy share and median lag over a sliding window, and a verdict.

    :meth:`record` is the sans-I/O core (one tick: wall and thread CPU clocks, and how
    late the tick woke); :meth:`start` runs the probe, a task that sleeps :data:`TICK_S`.
    ``max_busy`` is a share of one core (0.9 = 90%); 0 never reports overload.
    """

    def __init__(
        self,
        max_busy: float,
        *,
        tick_s: float = TICK_S,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        if not 0 <= max_busy <= 1:
            raise ValueError("the busy limit is a share of one core, 0..1")
        self.max_busy = max_busy
        self.tick_s = tick_s
        self.clock = clock
        self.cpu_clock = cpu_clock
        self._window = max(2, round(window_s / tick_s))
        self._lags: deque[float] = deque(maxlen=self._window)
        self._clocks: deque[tuple[float, float]] = deque(maxlen=self._window + 1)
        self._overloaded = False
        self._taken: deque[float] = deque()
        self._task: asyncio.Task[None] | None = None

    @property
    def lag_s(self) -> float:
        """Median lag over the window (0 before the first tick)."""
        return statistics.median(self._lags) if self._lags else 0.0

    @property
    def busy(self) -> float:
        """The loop thread's CPU time over the window, as a share of the wall time."""
        if len(self._clocks) < 2:
            return 0.0
        (wall0, cpu0), (wall1, cpu1) = self._clocks[0], self._clocks[-1]
        return (cpu1 - cpu0) / (wall1 - wall0) if wall1 > wall0 else 0.0

    @property
    def overloaded(self) -> bool:
        return self._overloaded

    def describe(self) -> str:
        return f"its event loop is {self.busy:.0%} busy and runs {self.lag_s * 1000:.0f} ms late"

    def has_room(self, calls: int) -> bool:
        """Room for one more call besides ``calls``: not overloaded, and the busy share
        plus the calls taken too recently to show in it, plus this one, at the average
        cost of a call, stays within the limit."""
        if not self.max_busy:
            return True
        if self._overloaded:
            return False
        now = self.clock()
        while self._taken and now - self._taken[0] > RAMP_S:
            self._taken.popleft()
        starting = len(self._taken)
        settled = calls - starting  # the calls that show in the busy share
        per_call = self.busy / settled if settled > 0 else 0.0  # (none: cost unknown)
        return self.busy + per_call * (starting + 1) <= self.max_busy

    def taken(self) -> None:
        """A call was just taken (it shows in :attr:`busy` only after a while)."""
        self._taken.append(self.clock())

    def record(self, wall: float, cpu: float, lag_s: float) -> None:
        self._clocks.append((wall, cpu))
        self._lags.append(max(0.0, lag_s))
        if not self.max_busy or len(self._lags) < self._window // 2:
            return  # (half a window first: a slow start-up is not overload)
        busy, lag = self.busy, self.lag_s
        if not self._overloaded and (busy > self.max_busy or lag > MAX_LAG_S):
            self._overloaded = True
            log.warning("%s: refusing new calls until it has time again", self.describe())
        elif self._overloaded and busy < self.max_busy - CLEAR_BUSY and lag < CLEAR_LAG_S:
            self._overloaded = False
            log.info("%s: taking calls again", self.describe())

    def start(self) -> None:
        """Start the probe on the running loop (idempotent; nothing when disabled)."""
        if self._task is None and self.max_busy:
            self._task = asyncio.get_running_loop().create_task(self._probe(), name="loop-load")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _probe(self) -> None:
        while True:
            asked = self.clock()
            await asyncio.sleep(self.tick_s)
            now = self.clock()
            self.record(now, self.cpu_clock(), now - asked - self.tick_s)
