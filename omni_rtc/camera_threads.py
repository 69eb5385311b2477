"""The threads that decode the callers' cameras and encode their JPEGs.

Every call's audio is paced on the event loop: a VP8 chain or a JPEG there (0.4 to 2 ms
each, 48 images a second at 24 calls) delays every other call's packets and reply frames
behind it.  In these threads FFmpeg runs without the GIL, and on Linux they run below
the loop's priority (nice +:data:`NICENESS`), so the kernel lets the loop in first: the
pictures take the time the audio leaves, and a core that cannot do both gives fewer
images, never late audio.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("omni_rtc.media")

NICENESS = 10
"""Ten steps below the loop: a thread at +10 gets ~10% of a core the loop wants too (the
scheduler's weights for nice 10 and 0 are 110 and 1024)."""


class CameraThreads:
    """A thread pool for camera work, and the CPU time its threads have used."""

    def __init__(self, max_workers: int) -> None:
        self._clocks: list[int] = []
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(
            max_workers=max_workers,
            thread_name_prefix="omni-rtc-camera",
            initializer=self._thread_started,
        )

    def cpu_seconds(self) -> float:
        """CPU time used by the pool's threads so far (for the overload guard)."""
        total = 0.0
        for clock in self._clocks:
            with contextlib.suppress(OSError):  # a thread that has ended
                total += time.clock_gettime(clock)
        return total

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _thread_started(self) -> None:
        if sys.platform.startswith("linux"):  # elsewhere a thread id is no process id
            thread = threading.get_native_id()
            try:  # below the thread that made it (the loop's, or an embedder's)
                niceness = os.getpriority(os.PRIO_PROCESS, thread) + NICENESS
                os.setpriority(os.PRIO_PROCESS, thread, min(niceness, 19))
            except OSError as exc:
                log.debug("camera thread keeps the loop's priority: %s", exc)
        with contextlib.suppress(AttributeError, OSError):  # not on every platform
            clock = time.pthread_getcpuclockid(threading.get_ident())
            with self._lock:
                self._clocks.append(clock)
