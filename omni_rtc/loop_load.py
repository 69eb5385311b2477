"""How full this process's event loop is: the sign that it holds as many calls as it can.

Every call's media runs on one event loop, so one core is the limit of a process.  Two
signs that it is reached, both over the last two seconds: the loop thread's CPU time
(how busy it is), and how late a timer fires (the median lag: under a millisecond while
the loop has time to spare; many milliseconds when it is saturated, or when other
processes take its core).  Measured with peer-bench's A/V calls on one core: at 16 calls
the process used 73% of the core and the median lag was 0.7 ms; at 24, 99% and 18-30
ms, and the calls missed real time.  A call added then takes the others down with it,
so the bridge refuses new calls (503 + Retry-After; the front tries another worker)
while the loop is over its limit, until it is well under it again.

Refusing protects the calls from new ones, not from themselves: a camera that sends
more, or a neighbour taking the core, can still push the loop past real time.  So a
busy loop first decodes cameras ``light`` (without the loop filter: every image, a
little less sharp; :mod:`omni_rtc.light_cameras`), and a loop that is nearly full or
late also turns ``lean``: calls decode the cameras that
send key frames often enough at key frames only (fewer images; the model keeps hearing
everything in real time), all of them, then as many as it takes, and no call is taken,
until there would be room for the full work again (:mod:`omni_rtc.lean_cameras`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import time
from collections import deque
from collections.abc import Callable

from .lean_cameras import STARTED, LeanCameras
from .light_cameras import LightCameras

log = logging.getLogger("omni_rtc.load")

TICK_S = 0.1
"""A timer wake-up costs the process ~0.2 ms of CPU on a 2-vCPU VM (measured: 0.45% of
a core for an idle process at 20 a second), so ten a second: 20 lags in the window."""
WINDOW_S = 2.0
MAX_LAG_S = 0.010
"""A loop this late (median) is overloaded whatever its own CPU time."""
CLEAR_BUSY = 0.10
"""Overload by CPU time ends once the loop is this much (share of its core) under the
limit (or at half the limit, for limits under 20%)."""
CLEAR_LAG_S = 0.003
"""Overload by lag ends once the median lag is under this."""
RAMP_S = 3.0
"""A call starts costing its share a second or two after it is taken (ICE, DTLS, then
its first key frame): until then it is counted at the average cost of a call."""
LEAN_BEFORE_S = 0.5
"""The busy share just before going lean is measured over this long (the window's
average lags a rising load)."""
QUIET_S = 300.0
"""A process at its capacity goes in and out of overload every minute or so: say so once
per 5 minutes (with how often since), the rest at debug level."""
SATURATED_BUSY = 0.97
SATURATED_LAG_S = 2 * MAX_LAG_S
"""A loop this busy or this late goes lean at once; otherwise only once light decoding
has been on for a window (light cannot bring a saturated loop back in time)."""
MIN_CALLS_TO_PROJECT = 3
"""Below this many settled calls the loop's own work (idle timers, an in-process
emulator, an embedding application) would pass for the cost of a call."""


class LoopLoad:
    """The event loop's busy share and median lag over a sliding window, and a verdict.

    :meth:`record` is the sans-I/O core (one tick: wall and thread CPU clocks, and how
    late the tick woke); :meth:`start` runs the probe, a timer every :data:`TICK_S`.
    ``max_busy`` is a share of one core (0.9 = 90%); 0 turns the guard off.
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
        self.clear_busy = max(max_busy - CLEAR_BUSY, max_busy / 2)
        self.tick_s = tick_s
        self.clock = clock
        self.cpu_clock = cpu_clock
        self._window = max(2, round(window_s / tick_s))
        self._lags: deque[float] = deque(maxlen=self._window)
        self._clocks: deque[tuple[float, float]] = deque(maxlen=self._window + 1)
        self._too_busy = False
        self._too_late = False
        self.cameras = LeanCameras(max_busy, window_s)
        """Which calls' cameras are decoded at key frames only."""
        self.light_cameras = LightCameras(max_busy, window_s)
        """Whether cameras are decoded without the loop filter."""
        self._before_lean_ticks = max(1, round(LEAN_BEFORE_S / tick_s))
        self._quiet_until = -math.inf
        self._lean_quiet_until = -math.inf
        self._loud = False
        self._unsaid_trips = 0
        self._taken: dict[str, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def lag_s(self) -> float:
        """Median lag over the window (0 before the first tick)."""
        return statistics.median(self._lags) if self._lags else 0.0

    @property
    def busy(self) -> float:
        """The loop thread's CPU time over the window, as a share of the wall time."""
        return self._busy_over(len(self._clocks) - 1)

    def _busy_over(self, ticks: int) -> float:
        """The busy share over the last ``ticks`` ticks (at most the window)."""
        clocks = self._clocks
        ticks = min(ticks, len(clocks) - 1)
        if ticks < 1:
            return 0.0
        (wall0, cpu0), (wall1, cpu1) = clocks[-1 - ticks], clocks[-1]
        return (cpu1 - cpu0) / (wall1 - wall0) if wall1 > wall0 else 0.0

    @property
    def light(self) -> bool:
        """Cameras are decoded without the loop filter (every image, a little less sharp)."""
        return self.light_cameras.on

    @property
    def lean(self) -> bool:
        """Calls' cameras (all, or some) are decoded at key frames only."""
        return self.cameras.active

    @property
    def lean_share(self) -> float:
        """The share of the calls whose cameras are decoded at key frames only."""
        return self.cameras.share

    def lean_for(self, call_id: str) -> bool:
        """Whether this call's cameras are decoded at key frames only now."""
        return self.cameras.lean_for(call_id)

    @property
    def overloaded(self) -> bool:
        """Over the busy limit or late, until well under it and on time again; or lean
        (its busy share is the calls' lean cost, no measure of room for another)."""
        return self._too_busy or self._too_late or self.lean

    @property
    def measured(self) -> bool:
        """Half a window of ticks seen: enough to judge (a slow start-up is not overload)."""
        return len(self._lags) >= self._window // 2

    def describe(self) -> str:
        young = self._young()
        starting = f", {young} calls just started" if young else ""
        share = self.lean_share
        lean = (
            " (cameras at key frames only)"
            if share >= 1
            else f" (cameras of {share:.0%} of the calls at key frames only)"
            if self.lean
            else " (cameras without the loop filter)"
            if self.light
            else ""
        )
        return (
            f"its event loop is {self.busy:.0%} busy{lean}{starting} "
            f"and runs {self.lag_s * 1000:.0f} ms late"
        )

    def has_room(self, *, settled: int, starting: int) -> bool:
        """Room for one more call besides ``settled`` running ones and ``starting`` ones
        being set up: not overloaded, and the busy share plus the calls too young to
        show in it plus this one, at the average cost of a call, within the limit."""
        if not self.max_busy or not self.measured:
            return True
        if self.overloaded:
            return False
        young = min(self._young(), settled)
        shown = settled - young  # the calls whose cost is in the busy share
        if shown < MIN_CALLS_TO_PROJECT:
            return self.busy <= self.max_busy
        per_call = self.busy / shown
        return self.busy + per_call * (young + starting + 1) <= self.max_busy

    def _young(self) -> int:
        """Calls taken in the last :data:`RAMP_S` (older ones are forgotten here)."""
        now = self.clock()
        for call_id, at in list(self._taken.items()):
            if now - at > RAMP_S:
                del self._taken[call_id]
        return len(self._taken)

    def taken(self, call_id: str) -> None:
        """A call just started (it shows in :attr:`busy` only after a while)."""
        if self.max_busy:
            self._taken[call_id] = self.clock()
            self.cameras.taken(call_id)

    def gone(self, call_id: str) -> None:
        """A call ended (one that ends young must not be projected any longer)."""
        self._taken.pop(call_id, None)
        self.cameras.gone(call_id)

    def record(self, wall: float, cpu: float, lag_s: float) -> None:
        self._clocks.append((wall, cpu))
        self._lags.append(max(0.0, lag_s))
        if not self.max_busy or not self.measured:
            return
        busy, lag = self.busy, self.lag_s
        was = self.overloaded
        if busy > self.max_busy:
            self._too_busy = True
        elif busy < self.clear_busy:
            self._too_busy = False
        late = lag > MAX_LAG_S
        if late:
            self._too_late = True
        elif lag < CLEAR_LAG_S:
            self._too_late = False
        light = self.light_cameras.judge(wall, busy, late=late, lean=self.cameras.active)
        if light is not None:
            log.info("%s: %s", self.describe(), light)
        change = self.cameras.judge(
            wall,
            busy,
            self._busy_over(self._before_lean_ticks),
            late=late,
            on_time=lag < CLEAR_LAG_S,
            may_start=(
                self.light_cameras.shown(wall) or busy >= SATURATED_BUSY or lag >= SATURATED_LAG_S
            ),
        )
        if change is STARTED and wall >= self._lean_quiet_until:
            self._lean_quiet_until = wall + QUIET_S  # (a warning each episode: too many)
            log.warning("%s: %s", self.describe(), change)
        elif change is not None:
            log.info("%s: %s", self.describe(), change)
        if self.overloaded and not was:
            self._say_refusing(wall)
        elif was and not self.overloaded:  # (lean may have been the last reason)
            level = logging.INFO if self._loud else logging.DEBUG
            log.log(level, "%s: taking calls again", self.describe())

    def _say_refusing(self, now: float) -> None:
        self._loud = now >= self._quiet_until
        if not self._loud:
            self._unsaid_trips += 1
            log.debug("%s: refusing new calls until it has time again", self.describe())
            return
        since = (
            f" (and {self._unsaid_trips} more times since the last warning)"
            if self._unsaid_trips
            else ""
        )
        log.warning("%s: refusing new calls until it has time again%s", self.describe(), since)
        self._quiet_until = now + QUIET_S
        self._unsaid_trips = 0

    def start(self) -> None:
        """Start the probe on the running loop (idempotent; nothing when disabled).

        A chain of timer callbacks, not a task: nothing to await or to leak."""
        if self._timer is None and self.max_busy:
            self._lags.clear()
            self._clocks.clear()
            self._schedule(asyncio.get_running_loop())

    def stop(self) -> None:
        """Stop the probe; no verdict stands without it."""
        self._too_busy = self._too_late = False
        self.cameras.stop()
        self.light_cameras.stop()
        self._taken.clear()
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        due = self.clock() + self.tick_s
        self._timer = loop.call_later(self.tick_s, self._tick, loop, due)

    def _tick(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        now = self.clock()
        self.record(now, self.cpu_clock(), now - due)
        self._schedule(loop)
