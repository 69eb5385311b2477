"""Which calls' cameras are decoded at key frames only while the event loop is nearly full.

Sans-I/O: :class:`~omni_rtc.loop_load.LoopLoad` measures the loop and hands each verdict
to :meth:`LeanCameras.judge`.  A loop that is nearly full (:data:`LEAN_BUSY`) or late
goes *lean*: every call's camera is decoded at its key frames only (if it sends them
often enough: fewer images, the model keeps hearing everything in real time).  Once that
settled, what full work costs is known as a ratio of the lean work (at most twice: a
camera dearer than that keeps going lean and back).  Once a share has been held
:data:`LEAN_HOLD_WINDOWS`, the loop either has room for full work again (lean ends), or
keeps only as many calls lean, the latest to arrive, as hold it :data:`PARTIAL_MARGIN`
under :data:`LEAN_BUSY`, give or take half of that (and under the busy share at which it
ran too full or late before): the others get all their images back; fewer lean only
while on time, more at once.  Too full or late again, every call goes lean at once, what
full work costs is learnt from what that share cost, and at least one eighth more of
the calls stay lean from then on, until :data:`LEAN_FORGET_WINDOWS` pass without another
(for this episode, and a repeat within :data:`LEAN_REPEAT_WINDOWS`).
"""

from __future__ import annotations

import math

LEAN_BUSY = 0.90
"""A loop this busy (or late) sheds camera work."""
LEAN_SETTLE_WINDOWS = 1.5
"""After this long lean (in windows: 3 s), the window shows what shedding saved."""
LEAN_HOLD_WINDOWS = 5.0
"""A share is kept at least this long (10 s), not changed with every window."""
LEAN_MAX_GROWTH = 1.0
"""Full camera work is taken to cost at most twice the lean work (a bigger drop after
going lean was calls ending, not what leaning saved)."""
LEAN_REPEAT_WINDOWS = 15.0
"""Lean again this soon (30 s) after it ended: what full work costs was underestimated
(a saturated loop reads 100%, whatever the demand), so keep what was learnt."""
LEAN_SHARE_STEPS = 8
"""Shares are chosen in eighths of the calls: finer steps would be lost in the busy
share's noise."""
PARTIAL_MARGIN = 0.05
"""Partly lean, the loop aims this far under :data:`LEAN_BUSY` (what full work costs is
an estimate), give or take half of it: more calls lean only over the target plus that,
fewer only if they fit under the target minus that (a dead band, so that the busy
share's noise does not turn calls lean and back every hold time)."""
LEAN_FORGET_WINDOWS = 150.0
"""What running too full or late taught (a higher cost, a lower ceiling, a least share)
is forgotten after this long (5 minutes) without another: one burst, or a neighbour
taking the core for a moment, must not keep calls lean for good."""


STARTED = "cameras decoded at key frames only (fewer images) until it has time again"
ALL_AGAIN = "every camera at key frames only again"
MORE = "more calls' cameras at key frames only"
FEWER = "the other calls' cameras decoded in full"
ENDED = "cameras decoded in full again"


class LeanCameras:
    """The lean verdict: :attr:`active` (an episode: no call is taken), and which calls'
    cameras are lean (:meth:`lean_for`; every call's, unknown ones too, while
    :attr:`every`)."""

    def __init__(self, max_busy: float, window_s: float) -> None:
        self.max_busy = max_busy
        self.lean_busy = max(LEAN_BUSY, max_busy)
        self.settle_s = LEAN_SETTLE_WINDOWS * window_s
        self.hold_s = LEAN_HOLD_WINDOWS * window_s
        self.repeat_s = LEAN_REPEAT_WINDOWS * window_s
        self.forget_s = LEAN_FORGET_WINDOWS * window_s
        self.active = False
        self.every = False
        self._calls: dict[str, None] = {}
        """The live calls, in the order they arrived."""
        self._lean: set[str] = set()
        """Partly lean: the calls whose cameras are (a subset of ``_calls``)."""
        self._since = 0.0
        """When the share last changed."""
        self._ended = -math.inf
        self._busy_before = 0.0
        self._busy_all_lean = 0.0
        self._growth: float | None = None
        """What full work costs over lean work, minus one (measured once lean settled,
        raised by what a share that ran too full cost)."""
        self._measured = 0.0
        """The growth measured as lean settled (and the previous episode's, on a repeat)."""
        self._forget()

    def _forget(self) -> None:
        """A new episode, not a repeat: nothing learnt holds."""
        self._previous_growth = 0.0
        self._overran = -math.inf
        """When the loop, partly lean, last ran too full or late."""
        self._ceiling = 1.0
        """The busy share at which the loop, partly lean, ran too full or late."""
        self._least = 0.0
        """No smaller share than this (one eighth more than one that ran too full)."""

    @property
    def share(self) -> float:
        """The share of the live calls whose cameras are lean now."""
        if self.every:
            return 1.0
        return len(self._lean) / len(self._calls) if self._calls else 0.0

    def lean_for(self, call_id: str) -> bool:
        return self.every or call_id in self._lean

    def taken(self, call_id: str) -> None:
        self._calls[call_id] = None

    def gone(self, call_id: str) -> None:
        self._calls.pop(call_id, None)
        self._lean.discard(call_id)

    def stop(self) -> None:
        self.active = self.every = False
        self._calls.clear()
        self._lean.clear()
        self._growth = None
        self._forget()

    def judge(
        self,
        now: float,
        busy: float,
        recent: float,
        late: bool,
        on_time: bool,
        may_start: bool = True,
    ) -> str | None:
        """One tick's verdict: ``busy`` over the window, ``recent`` over its last half
        second (the window lags a rising load), ``late``: over the lag limit,
        ``on_time``: well under it; ``may_start``: what cheaper shedding does shows in
        ``busy`` (an episode starts only then).  Returns what changed, to be logged, if
        anything: :data:`STARTED`, :data:`ALL_AGAIN`, :data:`MORE`, :data:`FEWER` or
        :data:`ENDED`."""
        if not self.active:
            if may_start and (busy >= self.lean_busy or late):
                self.active = True
                self._busy_before = max(busy, recent)
                self._growth = None
                if now - self._ended > self.repeat_s:
                    self._forget()
                self._lean_calls(now, LEAN_SHARE_STEPS)
                return STARTED
            return None
        held = now - self._since
        growth = self._growth
        if growth is None:
            if held < self.settle_s:
                return None
            saved = max(0.0, self._busy_before - busy)
            growth = min(LEAN_MAX_GROWTH, saved / busy) if busy else LEAN_MAX_GROWTH
            growth = self._growth = self._measured = max(growth, self._previous_growth)
            self._busy_all_lean = busy
        share = self.share
        if share < 1 and (busy >= self.lean_busy or late):
            # the calls given their full work back cost more than foreseen
            level = max(busy, recent)
            self._growth = self._learnt(growth, level, share)
            self._ceiling = min(self._ceiling, level)
            self._least = max(self._least, share + 1 / LEAN_SHARE_STEPS)
            self._overran = now
            self._lean_calls(now, LEAN_SHARE_STEPS)
            return ALL_AGAIN
        if held < self.settle_s:
            return None
        if share >= 1:
            self._busy_all_lean = busy
        if held < self.hold_s:
            return None
        if now - self._overran > self.forget_s:
            self._ceiling, self._least = 1.0, 0.0
            growth = self._growth = self._measured
        all_lean = busy / (1 + growth * (1 - share))  # the loop with every call lean
        target = min(self.lean_busy, self._ceiling) - PARTIAL_MARGIN
        if on_time and all_lean * (1 + growth) <= min(self.max_busy, target):
            self.active = self.every = False
            self._lean.clear()
            self._ended = now
            self._previous_growth = growth
            return ENDED
        have = len(self._calls) if self.every else len(self._lean)
        steps = self._steps(target + PARTIAL_MARGIN / 2, all_lean, growth)
        if self._count(steps) > have:
            self._lean_calls(now, steps)
            return MORE
        steps = self._steps(target - PARTIAL_MARGIN / 2, all_lean, growth)
        if self._count(steps) < have and on_time:
            self._lean_calls(now, steps)
            return FEWER
        return None

    def _steps(self, target: float, all_lean: float, growth: float) -> int:
        """The eighths of the calls to keep lean for the loop to stay under ``target``."""
        needed = 1 - (target / all_lean - 1) / growth if growth else 1.0
        needed = max(needed, self._least)
        return min(LEAN_SHARE_STEPS, max(1, math.ceil(round(needed * LEAN_SHARE_STEPS, 6))))

    def _learnt(self, growth: float, busy: float, share: float) -> float:
        """The cost of full work, raised if ``busy`` at ``share`` says it is more."""
        if share >= 1 or not self._busy_all_lean:
            return growth
        implied = (busy / self._busy_all_lean - 1) / (1 - share)
        return min(LEAN_MAX_GROWTH, max(growth, implied))

    def _count(self, steps: int) -> int:
        return math.ceil(round(steps * len(self._calls) / LEAN_SHARE_STEPS, 6))

    def _lean_calls(self, now: float, steps: int) -> None:
        """``steps`` eighths of the calls lean: the latest to arrive (all: every call)."""
        self._since = now
        count = self._count(steps)
        self.every = steps >= LEAN_SHARE_STEPS or count >= len(self._calls)
        self._lean = set() if self.every else set(list(self._calls)[len(self._calls) - count :])
