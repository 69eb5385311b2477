"""Benchmarks start servers; a SIGTERM (``kill``, ``timeout``) must stop those too."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from typing import Any

SIGTERM_EXIT = 128 + signal.SIGTERM


def exit_on_sigterm() -> None:
    """For a script without an event loop: SIGTERM raises SystemExit(143), so its
    ``finally`` blocks run (Python's default SIGTERM skips them)."""
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(SIGTERM_EXIT))


def run(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run(main)``, where SIGTERM cancels ``main`` and exits 143.

    Python's default SIGTERM ends the process without running ``finally`` blocks, which
    orphaned the servers a benchmark started (still busy on their pinned core).  Cancelling
    the main task runs its ``finally`` while the loop and the calls are still alive.
    """
    terminated = False

    async def until_sigterm() -> None:
        task = asyncio.current_task()
        assert task is not None

        def cancel() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, cancel)
        await main

    try:
        asyncio.run(until_sigterm())
    except asyncio.CancelledError:
        if not terminated:
            raise
        sys.exit(SIGTERM_EXIT)
