"""Whether cameras are decoded without the loop filter: the first thing a busy loop sheds.

A camera image between two key frames decodes on top of every frame since the last key
frame (16 of 30 frames a second for a sender with a key frame a second that ignores
PLIs); that chain decoding is the biggest single cost of an A/V call on a full core.
FFmpeg's VP8 decoder can skip the in-loop deblocking filter on inter frames
(``skip_loop_filter=nokey``): 27-34% less decoding a frame (``bench/light_decoding.py``),
every image still taken, at a small loss of fidelity that grows along the chain:
measured at the 15th frame after a key frame (where the second image of a second comes
from), against full decoding, 52 dB on peer-bench's test pattern, 39 dB on a panned
photo with camera noise, 36 dB on a Mandelbrot zoom, 31 dB on a synthetic "life" pattern
(visible blocks there).

So a loop that gets busy (:data:`LIGHT_BUSY` or ``--max-loop-busy`` if higher, or late)
decodes cameras *light* (VP8 senders with a key frame at least every 2 s, from their
next one: short chains, little drift) before any call loses images to lean decoding
(key frames only, :mod:`omni_rtc.lean_cameras`, from 90%, once light shows in the busy
share or the loop is saturated), and goes back to full decoding only once it has been
well under that for :data:`LIGHT_CALM_WINDOWS` and no call is lean: light saves at most
about a quarter of a busy loop, so full decoding then fits under the threshold again
(no flapping).  A process that went light stays light while it is busier than that:
near its capacity it takes calls at the light cost.  Sans-I/O:
:class:`~omni_rtc.loop_load.LoopLoad` hands each verdict here.
"""

from __future__ import annotations

import math

LIGHT_BUSY = 0.80
"""A loop this busy (or late) decodes cameras light."""
LIGHT_CALM = 0.75
"""Back to full decoding only under this share of :data:`LIGHT_BUSY` (60% by default):
full decoding costs at most ~1.3 times light decoding (even where decoding cameras is
two thirds of the loop's work), so 60% light is under 80% full."""
LIGHT_CALM_WINDOWS = 5.0
"""That calm must last this long (10 s), lean decoding over."""

STARTED = "cameras decoded without the loop filter (every image, a little less sharp)"
ENDED = "cameras decoded with the loop filter again"


class LightCameras:
    """The light verdict: :attr:`on` while cameras are decoded without the loop filter."""

    def __init__(self, max_busy: float, window_s: float) -> None:
        self.light_busy = max(LIGHT_BUSY, max_busy)
        self.calm_busy = LIGHT_CALM * self.light_busy
        self.calm_s = LIGHT_CALM_WINDOWS * window_s
        self.window_s = window_s
        self.on = False
        self._on_since = math.inf
        self._calm_since = math.inf

    def shown(self, now: float) -> bool:
        """Light for a whole window: the busy share shows what it saved (only then may
        calls lose images to lean decoding)."""
        return now - self._on_since >= self.window_s

    def judge(self, now: float, busy: float, *, late: bool, lean: bool) -> str | None:
        """One verdict a tick: STARTED, ENDED or None (no change)."""
        if busy >= self.light_busy or late:
            self._calm_since = math.inf
            if not self.on:
                self.on = True
                self._on_since = now
                return STARTED
            return None
        if busy >= self.calm_busy or lean:
            self._calm_since = math.inf
        elif self._calm_since == math.inf:
            self._calm_since = now
        if self.on and now - self._calm_since >= self.calm_s:
            self.stop()
            return ENDED
        return None

    def stop(self) -> None:
        """No probe, no verdict: full decoding."""
        self.on = False
        self._on_since = self._calm_since = math.inf
