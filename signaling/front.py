"""The front process (``--workers N``): the public HTTP side, with the calls in workers.

It serves the page and ``/config``, checks access and the rate limit, hands each new call
(``/offer``, ``POST /whip``) to the least loaded worker and routes every later request
about a call (``DELETE /calls/{id}``, ``/whip/{id}``) to the worker that holds it: call
ids start with the worker's index. Media never passes through here: a worker's SDP
answer carries the worker's own ICE candidates. ``/healthz`` sums the workers'
capacity, ``/metrics`` their series.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge

from omni_rtc.config import Settings
from omni_rtc.emulator import Emulator, EmulatorConfig
from omni_rtc.sip.server import SipServer
from omni_rtc.workers.metrics_merge import merge
from omni_rtc.workers.pool import NoWorker, Worker, WorkerPool
from omni_rtc.workers.sip_split import FrontSipHandler

from .app import RETRY_AFTER_S, edge_application, json_error
from .auth import admit_call, require_auth
from .body import read_body
from .main import Signals, banner, secrets_of, start_public_site
from .server import PLAIN_TEXT_BY_DESIGN, REFUSED_HEADER
from .twilio_front import add_twilio_front_routes
from .whip import ENDPOINT, check_access, text_response
from .whip_sdp import WhipError

log = logging.getLogger("omni_rtc.front")

POOL = web.AppKey("pool", WorkerPool)
FRONT_METRICS = web.AppKey("front_metrics", CollectorRegistry)
PASSED_UP = ("Content-Type", "Authorization", "If-Match", "Accept")
PASSED_DOWN = (
    "Content-Type",
    "Location",
    "ETag",
    "Link",
    "Accept-Patch",
    "Accept-Post",
    "Allow",
    "Retry-After",
    REFUSED_HEADER,
    "WWW-Authenticate",
    "Cache-Control",
)


async def _relay(
    pool: WorkerPool, worker: Worker, request: web.Request, body: bytes, path: str
) -> web.Response:
    """The request as the worker answers it (selected headers, body as is)."""
    headers = {k: v for k, v in request.headers.items() if k in PASSED_UP}
    if request.remote:
        headers["X-Forwarded-For"] = request.remote
    async with pool.request(
        worker, request.method, path, data=body or None, headers=headers
    ) as reply:
        content = await reply.read()
        down: CIMultiDict[str] = CIMultiDict()
        for name in PASSED_DOWN:
            for value in reply.headers.getall(name, []):
                down.add(name, value)
        response = web.Response(status=reply.status, body=content, headers=down)
        response[PLAIN_TEXT_BY_DESIGN] = True  # the worker chose the format (WHIP: text)
        return response


async def _new_call(request: web.Request, body: bytes, *, whip: bool) -> web.Response:
    """Give a new call to the least loaded worker; the next one if it turns out full."""
    pool = request.app[POOL]
    tried: set[int] = set()
    while True:
        try:
            worker = pool.choose(exclude=tried)
        except NoWorker as exc:
            request.app[FRONT_METRICS_CAPACITY].labels("whip" if whip else "webrtc").inc()
            if whip:
                return text_response(503, str(exc), {"Retry-After": str(RETRY_AFTER_S)})
            return json_error(503, str(exc), {"Retry-After": str(RETRY_AFTER_S)})
        tried.add(worker.index)
        try:
            response = await _relay(pool, worker, request, body, request.path_qs)
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("worker %d did not take a call: %s", worker.index, exc)
            worker.ready = False  # the watch loop brings it back (or restarts it)
            continue
        finally:
            worker.pending = max(0, worker.pending - 1)
        refused = response.headers.get(REFUSED_HEADER)
        if response.status == 503 and refused in ("full", "overloaded"):
            worker.overloaded = refused == "overloaded"  # (until its next health poll)
            continue  # another worker may have room
        if response.status in (200, 201):
            worker.calls += 1
        return response


async def post_offer(request: web.Request) -> web.Response:
    admit_call(request)  # 429, 401 here; the worker checks the body and the token again
    return await _new_call(request, await read_body(request), whip=False)


async def delete_call(request: web.Request) -> web.Response:
    require_auth(request)
    worker = request.app[POOL].owner(request.match_info["call_id"])
    if worker is None:
        return json_error(404, "no such call")
    try:
        return await _relay(request.app[POOL], worker, request, b"", request.path)
    except (aiohttp.ClientError, OSError):
        return json_error(404, "no such call")


async def whip_endpoint(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    try:
        if request.method == "POST":
            check_access(request, new_call=True)
            return await _new_call(request, await read_body(request), whip=True)
        worker = next((w for w in pool.workers if w.ready), None)  # OPTIONS, 405s
        if worker is None:
            raise WhipError(503, "starting up", {"Retry-After": "1"})
        return await _relay(pool, worker, request, await read_body(request), request.path_qs)
    except WhipError as exc:
        return text_response(exc.status, str(exc), exc.headers)


async def whip_resource(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    worker = pool.owner(request.match_info["resource_id"])
    try:
        if request.method != "OPTIONS":
            check_access(request)
        if worker is None:
            raise WhipError(404, "no such WHIP session (it was deleted or never existed)")
        return await _relay(pool, worker, request, await read_body(request), request.path_qs)
    except WhipError as exc:
        return text_response(exc.status, str(exc), exc.headers)
    except (aiohttp.ClientError, OSError):
        return text_response(404, "no such WHIP session (its worker is gone)")


async def healthz(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    if not pool.accepting:
        status = "draining"
    elif pool.has_room:
        status = "ok"
    else:
        status = "overloaded" if pool.overloaded else "full"
    workers = [
        {
            "index": w.index,
            "pid": w.process.pid if w.process is not None else None,
            "ready": w.ready,
            "calls": w.calls,
            "max_calls": w.max_calls,
            "overloaded": w.overloaded,
        }
        for w in pool.workers
    ]
    body = {"status": status, "calls": pool.calls, "max_calls": pool.max_calls, "workers": workers}
    return web.json_response(
        body, status=200 if status == "ok" else 503, headers={"Cache-Control": "no-store"}
    )


async def metrics(request: web.Request) -> web.Response:
    pool = request.app[POOL]

    async def scrape(worker: Worker) -> str:
        try:
            async with pool.request(worker, "GET", "/metrics") as reply:
                return await reply.text()
        except (aiohttp.ClientError, OSError):
            return ""

    texts = await asyncio.gather(*(scrape(w) for w in pool.workers if w.ready))
    request.app[FRONT_METRICS_RESTARTS].set(pool.restarts_total)
    own = generate_text(request.app[FRONT_METRICS])
    return web.Response(text=merge([own, *texts]), headers={"Content-Type": CONTENT_TYPE_LATEST})


def generate_text(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


FRONT_METRICS_CAPACITY = web.AppKey("front_capacity", Counter)
FRONT_METRICS_RESTARTS = web.AppKey("front_restarts", Gauge)


def build_front_app(settings: Settings, pool: WorkerPool) -> web.Application:
    app = edge_application(settings)
    app[POOL] = pool
    registry = CollectorRegistry()
    app[FRONT_METRICS] = registry
    app[FRONT_METRICS_CAPACITY] = Counter(
        "omni_rtc_front_refused",
        "Calls the front refused because every worker was full or shutting down",
        ["transport"],
        registry=registry,
    )
    app[FRONT_METRICS_RESTARTS] = Gauge(
        "omni_rtc_worker_restarts", "Worker processes restarted after they died", registry=registry
    )
    app.router.add_post("/offer", post_offer)
    app.router.add_delete("/calls/{call_id}", delete_call)
    app.router.add_route("*", ENDPOINT, whip_endpoint)
    app.router.add_route("*", ENDPOINT + "/{resource_id}", whip_resource)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    add_twilio_front_routes(app, settings, pool, retry_after_s=RETRY_AFTER_S)
    return app


async def serve_front(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Start the workers, then serve until a signal; drain the workers on the way out."""
    emulator: Emulator | None = None
    upstream = settings.base_url()
    if upstream is None:  # offline: one emulator for every worker
        config = EmulatorConfig(reply=settings.emulator_reply, keep_sessions=8)  # type: ignore[arg-type]
        emulator = Emulator(config, avoid_port=settings.port)  # our port, bound later
        await emulator.start()
        upstream = emulator.url
    pool = WorkerPool(settings, upstream_url=upstream, log_secrets=tuple(secrets_of(settings)))
    try:
        await pool.start()
        runner, url = await start_public_site(build_front_app(settings, pool), settings)
    except BaseException:
        await pool.close()
        if emulator is not None:
            await emulator.stop()
        raise
    sip = None
    sip_config = settings.sip_config()
    if sip_config is not None:  # signaling here, each call's media in a worker
        handler = FrontSipHandler(pool)
        sip = SipServer(sip_config, handler, media_factory=handler.media)
        await sip.start()
    signals = Signals()
    signals.install()  # before the banner: whoever reads it may stop us at once
    print(banner(settings, url, upstream), flush=True)
    if ready is not None:
        ready.set()
    try:
        await signals.stop.wait()
        log.info("draining: %d calls in %d workers", pool.calls, pool.count)
        await pool.stop(drain_seconds=settings.drain_seconds, hurry=signals.hurry)
    finally:
        if sip is not None:
            await sip.stop()
        await pool.close()
        await runner.cleanup()
        if emulator is not None:
            await emulator.stop()
