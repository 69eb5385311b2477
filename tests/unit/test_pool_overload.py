"""The front skips a worker whose event loop has no time for calls (its /healthz, its 503)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from omni_rtc.config import Settings
from omni_rtc.workers.pool import NoWorker, WorkerPool
from signaling.front import build_front_app

Handler = Callable[[web.Request], Any]


@contextlib.asynccontextmanager
async def fake_workers(
    settings: Settings, routes: Callable[[int], dict[str, Handler]]
) -> AsyncIterator[WorkerPool]:
    """A pool whose workers are small apps on their unix sockets: ``routes(index)`` gives
    each one's ``{"GET /healthz": handler, ...}``."""
    pool = WorkerPool(settings, upstream_url=None)
    runners: list[web.AppRunner] = []
    try:
        for worker in pool.workers:
            app = web.Application()
            for route, handler in routes(worker.index).items():
                method, path = route.split()
                app.router.add_route(method, path, handler)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.UnixSite(runner, worker.socket_path).start()
            runners.append(runner)
            worker.session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=worker.socket_path)
            )
        yield pool
    finally:
        for worker in pool.workers:
            if worker.session is not None:
                await worker.session.close()
        for runner in runners:
            await runner.cleanup()
        shutil.rmtree(pool._dir, ignore_errors=True)


async def test_an_overloaded_worker_gets_no_new_calls() -> None:
    health: dict[int, dict[str, Any]] = {
        0: {"status": "overloaded", "calls": 1, "max_calls": 6},
        1: {"status": "ok", "calls": 3, "max_calls": 6},
    }

    def routes(index: int) -> dict[str, Handler]:
        async def healthz(request: web.Request) -> web.Response:
            body = health[index]
            return web.json_response(body, status=200 if body["status"] == "ok" else 503)

        return {"GET /healthz": healthz}

    settings = Settings.from_argv(["--workers", "2"], environ={})
    async with fake_workers(settings, routes) as pool:

        async def poll() -> None:
            for worker in pool.workers:
                await pool._poll(worker)

        await poll()
        assert [w.overloaded for w in pool.workers] == [True, False]
        assert pool.choose().index == 1  # the busier one, but on time
        assert not pool.overloaded

        health[1] = {"status": "overloaded", "calls": 3, "max_calls": 6}
        await poll()
        assert pool.overloaded
        assert not pool.has_room
        with pytest.raises(NoWorker, match="overloaded"):
            pool.choose()

        health[0] = {"status": "ok", "calls": 1, "max_calls": 6}
        await poll()
        assert pool.choose().index == 0


def test_a_full_pool_is_full_not_overloaded() -> None:
    pool = WorkerPool(Settings.from_argv(["--workers", "2"], environ={}), upstream_url=None)
    try:
        for worker in pool.workers:
            worker.ready, worker.calls, worker.max_calls = True, 6, 6
        pool.workers[0].overloaded = True  # late, but full anyway
        assert not pool.overloaded
        with pytest.raises(NoWorker, match="limit of 12 calls"):
            pool.choose()
    finally:
        shutil.rmtree(pool._dir, ignore_errors=True)


async def test_the_front_moves_on_when_a_worker_refuses_as_overloaded() -> None:
    offers: list[int] = []

    def routes(index: int) -> dict[str, Handler]:
        async def healthz(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok", "calls": 0, "max_calls": 6})

        async def offer(request: web.Request) -> web.Response:
            offers.append(index)
            if index == 0:  # its loop filled up since the last health poll
                return web.json_response(
                    {"error": "this server is overloaded (...)"},
                    status=503,
                    headers={"Retry-After": "15", "X-Omni-Rtc-Refused": "overloaded"},
                )
            return web.json_response({"type": "answer", "sdp": "v=0", "call_id": "1.x"})

        return {"GET /healthz": healthz, "POST /offer": offer}

    settings = Settings.from_argv(["--workers", "2"], environ={})
    async with fake_workers(settings, routes) as pool:
        for worker in pool.workers:
            await pool._poll(worker)
        front = web.AppRunner(build_front_app(settings, pool))
        await front.setup()
        try:
            await web.TCPSite(front, "127.0.0.1", 0).start()
            url = f"http://127.0.0.1:{front.addresses[0][1]}/offer"
            async with aiohttp.ClientSession() as http:
                async with http.post(url, json={"type": "offer", "sdp": "v=0"}) as response:
                    first = (response.status, await response.json())
                async with http.post(url, json={"type": "offer", "sdp": "v=0"}) as response:
                    second = response.status
        finally:
            await front.cleanup()
        assert first == (200, {"type": "answer", "sdp": "v=0", "call_id": "1.x"})
        assert second == 200
        assert offers == [0, 1, 1]  # worker 0 asked once, then left alone until its poll
        assert pool.workers[0].overloaded
