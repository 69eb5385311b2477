"""SIP with worker processes: signaling in the front, media and the model in a worker.

One SIP address serves every worker: the front runs the SIP user agent (transactions,
dialogs, digest, REGISTER), and for each call it asks the least loaded worker to open
the RTP socket; the 200 OK's SDP names that socket, so RTP flows straight between the
caller and the worker, which runs the conversation. Over the worker's Unix socket:

- ``POST /internal/sip/{call}/open`` -> ``{"port"}``: an RTP endpoint in the worker;
- ``POST /internal/sip/{call}/media`` (the negotiated codec, address, direction): apply
  it; the first one starts the conversation;
- ``POST /internal/sip/{call}/run`` answers when the worker wants the call hung up
  (a limit, the model gone), with the reason: the front then sends BYE;
- ``POST /internal/sip/{call}/end`` (the reason): the call is over, release everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from ..sip.handler import SipCall
from ..sip.media import MediaStats, RtpEndpoint
from ..sip.ports import PortPool
from ..sip.sdp import Codec, MediaChoice
from ..sip.transaction import Peer
from ..transports.sip import SipGateway
from .pool import NoWorker, Worker, WorkerPool

log = logging.getLogger("omni_rtc.sip")

PREFIX = "/internal/sip/{call_id}"


def choice_to_json(choice: MediaChoice) -> dict[str, Any]:
    return dataclasses.asdict(choice)


def choice_from_json(data: dict[str, Any]) -> MediaChoice:
    fields = dict(data)
    fields["codec"] = Codec(**fields["codec"])
    return MediaChoice(**fields)


# -------------------------------------------------------------------- front side


class RemoteMedia(RtpEndpoint):
    """The front's stand-in for a call's RTP endpoint, which lives in a worker."""

    def __init__(self, pool: WorkerPool, call_id: str, caller: str, host: str) -> None:
        self.pool = pool
        self.call_id = call_id
        self.caller = caller
        self.host = host
        self.worker: Worker | None = None
        self.port = 0
        self.choice: MediaChoice | None = None
        self.reply_track = None
        self.stats = MediaStats()
        self.closed = False
        self.reason = "peer_closed"
        self._sent: asyncio.Task[None] | None = None

    async def open(self) -> int:
        try:
            worker = self.pool.choose()
        except NoWorker as exc:
            raise OSError(str(exc)) from None
        try:
            reply = await self._call(worker, "open", {"caller": self.caller, "host": self.host})
        finally:
            worker.pending = max(0, worker.pending - 1)
        self.worker = worker
        worker.calls += 1
        self.port = int(reply["port"])
        return self.port

    def configure(self, choice: MediaChoice) -> None:
        self.choice = choice
        previous = self._sent
        self._sent = asyncio.get_running_loop().create_task(self._configure(previous, choice))

    async def _configure(self, previous: asyncio.Task[None] | None, choice: MediaChoice) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous  # in order: a re-INVITE after the first answer
        if self.worker is not None:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await self._call(self.worker, "media", choice_to_json(choice))

    async def wait_for_hangup(self) -> str | None:
        """The reason the worker wants the call ended (None: the worker is gone)."""
        if self.worker is None:
            return None
        try:
            reply = await self._call(self.worker, "run", {})
        except (aiohttp.ClientError, OSError):
            return "internal_error"
        return str(reply.get("reason") or "hangup")

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._sent is not None:
            with contextlib.suppress(Exception):
                await self._sent
        if self.worker is None:
            return
        with contextlib.suppress(aiohttp.ClientError, OSError):
            stats = await self._call(self.worker, "end", {"reason": self.reason})
            self.stats = MediaStats(
                packets_in=int(stats.get("packets_in", 0)),
                packets_out=int(stats.get("packets_out", 0)),
            )

    async def _call(self, worker: Worker, action: str, body: dict[str, Any]) -> dict[str, Any]:
        path = PREFIX.format(call_id=self.call_id) + "/" + action
        async with self.pool.request(worker, "POST", path, json=body) as reply:
            reply.raise_for_status()
            data: dict[str, Any] = await reply.json()
            return data


class FrontSipHandler:
    """The front's SipCallHandler: the call itself runs in a worker."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool

    def media(
        self,
        call_id: str,
        caller: str,
        host: str,
        on_audio: Callable[[bytes, int], None],
        on_dtmf: Callable[[str, int], None],
    ) -> RtpEndpoint:
        return RemoteMedia(self.pool, call_id, caller, host)

    def has_room(self) -> bool:
        return self.pool.has_room

    async def call_started(self, call: SipCall) -> None:
        media = call.media
        assert isinstance(media, RemoteMedia)
        reason = await media.wait_for_hangup()
        if reason is not None and not call.ended:
            media.reason = reason
            call.hangup(reason)

    def caller_audio(self, call: SipCall, pcm: bytes, rate: int) -> None:
        """Never called: RTP goes to the worker."""

    def dtmf(self, call: SipCall, digit: str, duration_ms: int) -> None:
        """Never called: RTP goes to the worker."""

    async def call_ended(self, call: SipCall, reason: str) -> None:
        """Runs before the media closes: the worker hears why the call ended."""
        media = call.media
        assert isinstance(media, RemoteMedia)
        media.reason = reason


# -------------------------------------------------------------------- worker side


class WorkerSipCalls:
    """A worker's half: RTP endpoints and conversations for calls the front answered."""

    def __init__(self, gateway: SipGateway, ports: PortPool, idle_audio: str) -> None:
        self.gateway = gateway
        self.ports = ports
        self.idle_audio = idle_audio
        self.calls: dict[str, SipCall] = {}
        self.hangups: dict[str, asyncio.Future[str]] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_post(PREFIX + "/open", self.open)
        app.router.add_post(PREFIX + "/media", self.media)
        app.router.add_post(PREFIX + "/run", self.run)
        app.router.add_post(PREFIX + "/end", self.end)

    async def open(self, request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        body = await request.json()
        loop = asyncio.get_running_loop()
        hangup: asyncio.Future[str] = loop.create_future()
        endpoint = RtpEndpoint(
            self.ports,
            str(body["host"]),
            on_audio=lambda pcm, rate: self._audio(call_id, pcm, rate),
            on_dtmf=lambda digit, ms: self._dtmf(call_id, digit, ms),
            idle=self.idle_audio,
        )
        port = await endpoint.open()

        def want_hangup(reason: str) -> None:
            if not hangup.done():
                hangup.set_result(reason)

        peer = Peer("UDP", str(body["host"]), 0, str(body["host"]), 0)
        self.calls[call_id] = SipCall(call_id, str(body["caller"]), peer, endpoint, want_hangup)
        self.hangups[call_id] = hangup
        return web.json_response({"port": port})

    async def media(self, request: web.Request) -> web.Response:
        call = self.calls.get(request.match_info["call_id"])
        if call is None:
            return web.json_response({"error": "no such call"}, status=404)
        call.media.configure(choice_from_json(await request.json()))
        if call.id not in self.tasks:
            self.tasks[call.id] = asyncio.create_task(self._run(call), name=f"sip-{call.id}")
        return web.json_response({})

    async def _run(self, call: SipCall) -> None:
        try:
            await self.gateway.call_started(call)
        except Exception:
            log.exception("call %s: failed", call.id)
            call.hangup("internal_error")

    async def run(self, request: web.Request) -> web.Response:
        hangup = self.hangups.get(request.match_info["call_id"])
        if hangup is None:
            return web.json_response({"error": "no such call"}, status=404)
        reason = await asyncio.shield(hangup)
        return web.json_response({"reason": reason})

    async def end(self, request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        call = self.calls.pop(call_id, None)
        if call is None:
            return web.json_response({})
        reason = str((await request.json()).get("reason") or "hangup")
        call.ended = reason
        task = self.tasks.pop(call_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await call.media.close()
        await self.gateway.call_ended(call, reason)
        hangup = self.hangups.pop(call_id, None)
        if hangup is not None and not hangup.done():
            hangup.set_result(reason)
        stats = call.media.stats
        return web.json_response({"packets_in": stats.packets_in, "packets_out": stats.packets_out})

    def _audio(self, call_id: str, pcm: bytes, rate: int) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            self.gateway.caller_audio(call, pcm, rate)

    def _dtmf(self, call_id: str, digit: str, duration_ms: int) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            self.gateway.dtmf(call, digit, duration_ms)
