"""The JPEG threads run below the event loop's priority, so they never hold it off."""

from __future__ import annotations

import os
import threading

from omni_rtc.bridge import JPEG_THREAD_NICENESS, Bridge


def thread_niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_jpeg_threads_are_niced_below_the_loop_and_the_loop_is_not() -> None:
    loop_niceness = thread_niceness()
    bridge = Bridge(max_calls=1)
    try:
        in_pool = [bridge.executor.submit(thread_niceness).result(timeout=5) for _ in range(4)]
    finally:
        bridge.executor.shutdown()
    assert in_pool == [min(19, loop_niceness + JPEG_THREAD_NICENESS)] * 4
    assert thread_niceness() == loop_niceness  # the caller's own thread kept its priority
