"""Camera threads run below the event loop's priority and their CPU counts as the loop's."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from omni_rtc.bridge import Bridge
from omni_rtc.camera_threads import NICENESS, CameraThreads


def spin(seconds: float) -> float:
    """Burn CPU in this thread for ``seconds`` of its own CPU time."""
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass
    return time.thread_time() - start


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_camera_threads_are_niced_and_the_loop_is_not() -> None:
    threads = CameraThreads(2)
    try:
        niceness = threads.executor.submit(
            lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        ).result(5)
    finally:
        threads.shutdown()
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert niceness == min(own + NICENESS, 19)
    assert own == os.getpriority(os.PRIO_PROCESS, 0)  # the calling thread kept its own


def test_camera_cpu_time_is_counted() -> None:
    threads = CameraThreads(2)
    try:
        before = threads.cpu_seconds()
        used = threads.executor.submit(spin, 0.2).result(10)
        after = threads.cpu_seconds()
    finally:
        threads.shutdown()
    assert used >= 0.2
    assert after - before == pytest.approx(used, abs=0.05)


async def test_the_bridges_overload_guard_sees_its_camera_threads() -> None:
    bridge = Bridge(api_key="k", max_loop_busy=80)
    try:
        before = bridge.load.cpu_clock()
        used = bridge.executor.submit(spin, 0.2).result(10)
        seen = bridge.load.cpu_clock() - before
    finally:
        await bridge.close()
    assert seen >= used - 0.01  # the pool's time, besides this thread's own
