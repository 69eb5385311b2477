"""The front's view of its worker processes: start, watch, restart, pick, route, drain.

Workers talk HTTP on private Unix sockets (in a 0700 directory). The pool polls each
worker's ``/healthz`` to know its load, hands a new call to the least loaded one,
restarts a worker that died (only its own calls end with it) and forwards the
shutdown signals: SIGTERM to drain, SIGUSR1 to end calls at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import aiohttp

from ..config import Settings
from . import worker as worker_module
from .worker import WorkerSpec, worker_of

log = logging.getLogger("omni_rtc.workers")

POLL_S = 0.5
START_TIMEOUT_S = 60.0
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
BASE = "http://worker"
"""Requests to a worker go over its Unix socket; the host part is a placeholder."""


@dataclass
class Worker:
    index: int
    socket_path: str
    process: BaseProcess | None = None
    session: aiohttp.ClientSession | None = None
    ready: bool = False
    calls: int = 0
    max_calls: int = 0
    accepting: bool = True
    overloaded: bool = False
    """Its event loop has no time for another call (busy, late or lean): none until
    its next health poll says otherwise."""
    pending: int = 0
    """Calls handed over since the last health poll."""
    restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)

    @property
    def load(self) -> int:
        return self.calls + self.pending

    @property
    def has_room(self) -> bool:
        return self.ready and self.accepting and not self.overloaded and self.load < self.max_calls


class NoWorker(Exception):
    """No worker can take a call now (all full, starting or draining)."""


class WorkerPool:
    def __init__(
        self, settings: Settings, *, upstream_url: str | None, log_secrets: tuple[str, ...] = ()
    ) -> None:
        self.settings = settings
        self.count = settings.worker_count
        self.upstream_url = upstream_url
        self.log_secrets = log_secrets
        self.accepting = True
        self.restarts_total = 0
        self._dir = tempfile.mkdtemp(prefix="omni-rtc-workers-")
        os.chmod(self._dir, 0o700)
        self._context = multiprocessing.get_context("spawn")
        self.workers = [
            Worker(i, str(Path(self._dir) / f"worker-{i}.sock")) for i in range(self.count)
        ]
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        for worker in self.workers:
            self._spawn(worker)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(w.ready for w in self.workers):
            if time.monotonic() > deadline:
                raise RuntimeError("worker processes did not start in time")
            for worker in self.workers:
                if worker.process is not None and worker.process.exitcode is not None:
                    raise RuntimeError(
                        f"worker {worker.index} exited at start (code {worker.process.exitcode})"
                    )
                if not worker.ready:
                    await self._poll(worker)
            await asyncio.sleep(0.1)
        self._watch = asyncio.create_task(self._watch_loop(), name="omni-rtc-workers")

    def _spawn(self, worker: Worker) -> None:
        spec = WorkerSpec(
            settings=self.settings,
            index=worker.index,
            count=self.count,
            socket_path=worker.socket_path,
            upstream_url=self.upstream_url,
            log_secrets=self.log_secrets,
        )
        Path(worker.socket_path).unlink(missing_ok=True)
        process = self._context.Process(
            target=worker_module.main, args=(spec,), name=f"omni-rtc-worker-{worker.index}"
        )
        process.start()
        worker.process = process
        worker.ready = False
        worker.started_at = time.monotonic()
        worker.session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=worker.socket_path),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )
        log.info("worker %d: started (pid %s)", worker.index, process.pid)

    async def _watch_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(POLL_S)
            for worker in self.workers:
                if self.stopping:
                    return
                process = worker.process
                if process is None or process.exitcode is None:
                    await self._poll(worker)
                elif self.accepting:  # died: restart (a drained worker exits, that's all)
                    await self._restart(worker, process.exitcode)
                else:
                    worker.ready = False
                    worker.calls = 0

    async def _restart(self, worker: Worker, code: int) -> None:
        log.warning(
            "worker %d exited (code %s) with %d calls: they ended; restarting it",
            worker.index,
            code,
            worker.calls,
        )
        worker.ready = False
        worker.calls = worker.pending = 0
        if worker.session is not None:
            await worker.session.close()
        wait = RESTART_BACKOFF_S[min(worker.restarts, len(RESTART_BACKOFF_S) - 1)]
        if time.monotonic() - worker.started_at > 60:
            worker.restarts = 0  # it ran a while: not a crash loop
        worker.restarts += 1
        self.restarts_total += 1
        await asyncio.sleep(wait)
        if not self._stopping:
            self._spawn(worker)

    async def _poll(self, worker: Worker) -> None:
        try:
            poll = aiohttp.ClientTimeout(total=2)
            async with self.request(worker, "GET", "/healthz", timeout=poll) as response:
                data = await response.json()
        except (aiohttp.ClientError, OSError, ValueError, asyncio.TimeoutError):
            return  # starting, or gone: the watch loop sees an exit
        if not worker.ready:
            log.info("worker %d: ready", worker.index)
        worker.ready = True
        worker.calls = int(data.get("calls", 0))
        worker.max_calls = int(data.get("max_calls", 0))
        worker.accepting = data.get("status") != "draining"
        worker.overloaded = data.get("status") == "overloaded"
        worker.pending = 0

    async def stop(self, *, drain_seconds: float, hurry: asyncio.Event) -> None:
        """Drain: workers refuse new calls and end theirs within ``drain_seconds``."""
        self.accepting = False
        for worker in self.workers:
            self._signal(worker, signal.SIGTERM)
        deadline = time.monotonic() + drain_seconds + 10
        hurried = False
        while any(w.process is not None and w.process.is_alive() for w in self.workers):
            if hurry.is_set() and not hurried:
                hurried = True
                for worker in self.workers:
                    self._signal(worker, signal.SIGUSR1)
            if time.monotonic() > deadline:
                for worker in self.workers:
                    if worker.process is not None and worker.process.is_alive():
                        log.warning("worker %d did not stop: killing it", worker.index)
                        worker.process.kill()
                break
            await asyncio.sleep(0.1)
        await self.close()

    async def close(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        for worker in self.workers:
            if worker.process is not None and worker.process.is_alive():
                worker.process.terminate()
            if worker.process is not None:
                await asyncio.get_running_loop().run_in_executor(None, worker.process.join, 5)
            if worker.session is not None:
                await worker.session.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(worker.socket_path)
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)

    def _signal(self, worker: Worker, sig: int) -> None:
        process = worker.process
        if process is not None and process.pid is not None and process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)

    @property
    def stopping(self) -> bool:
        return self._stopping

    # ---------------------------------------------------------------- routing

    def choose(self, exclude: set[int] = frozenset()) -> Worker:  # type: ignore[assignment]
        """The least loaded worker with room; :class:`NoWorker` if there is none."""
        if not self.accepting:
            raise NoWorker("this server is shutting down")
        candidates = [w for w in self.workers if w.has_room and w.index not in exclude]
        if not candidates:
            if self.overloaded:
                raise NoWorker("this server is overloaded (its workers run late); retry shortly")
            raise NoWorker(f"this server is at its limit of {self.max_calls} calls")
        worker = min(candidates, key=lambda w: (w.load, w.index))
        worker.pending += 1
        return worker

    def owner(self, call_id: str) -> Worker | None:
        index = worker_of(call_id)
        if index is None or not 0 <= index < self.count:
            return None
        worker = self.workers[index]
        return worker if worker.ready else None

    @property
    def calls(self) -> int:
        return sum(w.calls for w in self.workers)

    @property
    def max_calls(self) -> int:
        return sum(w.max_calls or self.settings.max_calls for w in self.workers)

    @property
    def has_room(self) -> bool:
        return self.accepting and any(w.has_room for w in self.workers)

    @property
    def overloaded(self) -> bool:
        """No room, and at least one worker lacks it only because it runs late."""
        return not self.has_room and any(
            w.ready and w.accepting and w.overloaded and w.load < w.max_calls for w in self.workers
        )

    @contextlib.asynccontextmanager
    async def request(
        self, worker: Worker, method: str, path: str, **kwargs: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        if worker.session is None or worker.session.closed:
            raise aiohttp.ClientConnectionError(f"worker {worker.index} is not running")
        async with worker.session.request(method, BASE + path, **kwargs) as response:
            yield response
