"""Phone numbers behind the front process (``--workers N``): checked here, held by a worker.

The front answers ``/twilio/voice`` itself (TwiML holds no call state) and checks who
may open a media stream (the signature is over the public URL, which only the front
sees). It then opens the same stream on the least loaded worker over the worker's
private Unix socket and relays the frames both ways, unchanged; the worker takes
streams from the front without a second check. A worker that is full answers ``503``
to the relay, and the next one is tried.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import WSMsgType, web

from omni_rtc.config import Settings
from omni_rtc.transports.media_stream_dialects import DIALECTS, MAX_FRAME_BYTES, Dialect
from omni_rtc.workers.pool import BASE, NoWorker, Worker, WorkerPool

from .twilio import VOICE_PATH, Handler, admit_stream, voice_webhook

log = logging.getLogger("omni_rtc.front")


async def _open_on_a_worker(
    pool: WorkerPool, request: web.Request
) -> aiohttp.ClientWebSocketResponse[bool] | str:
    """The stream opened on a worker with room, or why none took it."""
    tried: set[int] = set()
    while True:
        try:
            worker: Worker = pool.choose(exclude=tried)
        except NoWorker as exc:
            return str(exc)
        tried.add(worker.index)
        try:
            if worker.session is None or worker.session.closed:
                raise aiohttp.ClientConnectionError(f"worker {worker.index} is not running")
            headers = {
                "X-Forwarded-For": request.headers.get("X-Forwarded-For", request.remote or "")
            }
            upstream = await worker.session.ws_connect(
                BASE + request.path_qs, headers=headers, max_msg_size=MAX_FRAME_BYTES
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status != 503:
                return f"the worker refused the stream ({exc.status})"
            continue  # full after all: another worker may have room
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("worker %d did not take a media stream: %s", worker.index, exc)
            worker.ready = False
            continue
        finally:
            worker.pending = max(0, worker.pending - 1)
        worker.calls += 1
        return upstream


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse[bool],
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse[bool],
) -> None:
    """Frames from one side to the other until ``source`` closes; then close ``sink`` with
    the same code and reason (Twilio's ``<Connect>`` ends when the stream closes)."""
    code, reason = 1000, ""
    while True:
        message = await source.receive()
        if message.type == WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type == WSMsgType.BINARY:  # the worker refuses it, and says why
            await sink.send_bytes(message.data)
        else:
            if message.type == WSMsgType.CLOSE:
                code, reason = int(message.data or 1000), str(message.extra or "")
            break
    if code in (1005, 1006, 1015):  # not for sending in a close frame
        code = 1000
    await sink.close(code=code, message=reason.encode()[:120])


def add_twilio_front_routes(
    app: web.Application, settings: Settings, pool: WorkerPool, *, retry_after_s: int = 15
) -> None:
    async def voice(request: web.Request) -> web.Response:
        return await voice_webhook(request, settings)

    def stream_handler(dialect: Dialect) -> Handler:
        async def stream(request: web.Request) -> web.StreamResponse:
            _, refused = admit_stream(request, settings, dialect)
            if refused is not None:
                return refused
            upstream = await _open_on_a_worker(pool, request)
            if isinstance(upstream, str):
                log.warning(
                    "%s media stream from %s refused: %s", dialect.name, request.remote, upstream
                )
                return web.json_response(
                    {"error": upstream}, status=503, headers={"Retry-After": str(retry_after_s)}
                )
            ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES)
            pumps: set[asyncio.Task[None]] = set()
            try:
                await ws.prepare(request)
                pumps = {
                    asyncio.create_task(_pump(ws, upstream)),
                    asyncio.create_task(_pump(upstream, ws)),
                }
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                await asyncio.wait(pumps, timeout=2)  # the other side's close goes through
            finally:
                for task in pumps:
                    task.cancel()
                await upstream.close()
                await ws.close()
            return ws

        return stream

    app.router.add_route("GET", VOICE_PATH, voice)
    app.router.add_route("POST", VOICE_PATH, voice)
    for dialect in DIALECTS.values():
        app.router.add_get(f"/{dialect.name}/stream", stream_handler(dialect))
