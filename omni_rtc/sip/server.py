"""SipServer: the asyncio layer that drives the sans-I/O user agent and owns every call's
media and tasks. Nothing survives a call: no task, socket or port reservation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from omni_rtc.sip.auth import Authenticator
from omni_rtc.sip.handler import SipCall, SipCallHandler
from omni_rtc.sip.media import RtpEndpoint
from omni_rtc.sip.ports import DEFAULT_RANGE, PortPool
from omni_rtc.sip.register import RegisterTarget, Registration
from omni_rtc.sip.sdp import MediaChoice
from omni_rtc.sip.transaction import Peer, Send
from omni_rtc.sip.transport import ListenAddress, TcpListener, UdpListener, local_address_for
from omni_rtc.sip.uas import CallConfirmed, CallEnded, CallOffered, MediaChanged, UserAgent

log = logging.getLogger("omni_rtc.sip")


@dataclass
class SipConfig:
    listen: list[ListenAddress]
    allow: list[str] = field(default_factory=list)
    user: str | None = None
    password: str | None = None
    rtp_ports: tuple[int, int] = DEFAULT_RANGE
    public_address: str | None = None
    """Written in Contact and SDP c= (behind NAT)."""
    media_host: str | None = None
    """Where RTP sockets bind (default: the first listener's host)."""
    register: RegisterTarget | None = None
    register_expires: int = 600
    busy_status: int = 503
    retry_after: int = 5
    ring_s: float = 0.0
    """Send 180 Ringing and wait this long before answering (0: answer at once)."""
    idle_audio: str = "silence"
    user_agent: str = "omni-rtc"


class MediaFactory(Protocol):
    """Makes a call's media endpoint: local RTP by default; the front process of
    ``--workers`` makes one that lives in a worker process."""

    def __call__(
        self,
        call_id: str,
        caller: str,
        host: str,
        on_audio: Callable[[bytes, int], None],
        on_dtmf: Callable[[str, int], None],
    ) -> RtpEndpoint: ...


class SipServer:
    def __init__(
        self,
        config: SipConfig,
        handler: SipCallHandler,
        *,
        media_factory: MediaFactory | None = None,
    ) -> None:
        if not config.listen:
            raise ValueError("SIP needs at least one --sip-listen address")
        self.config = config
        self.handler = handler
        auth = Authenticator(allow=config.allow, username=config.user, password=config.password)
        self.ua = UserAgent(
            auth, public_address=config.public_address, user_agent=config.user_agent
        )
        self.ports = PortPool(*config.rtp_ports)
        self._media_factory = media_factory or self._local_media
        self.listeners: list[UdpListener | TcpListener] = []
        self.calls: dict[str, SipCall] = {}
        self.registration: Registration | None = None
        self._pending: dict[str, RtpEndpoint | None] = {}
        self._started: set[str] = set()
        self._call_tasks: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for address in self.config.listen:
            listener: UdpListener | TcpListener
            listener = (UdpListener if address.transport == "UDP" else TcpListener)(
                address, self._receive
            )
            await listener.start()
            self.listeners.append(listener)
            log.info(
                "SIP listening on %s", ListenAddress(address.transport, address.host, listener.port)
            )
        if self.config.register is not None:
            await self._start_registration(self.config.register)

    async def stop(self) -> None:
        """Hang up every call (BYE), unregister, close listeners; leaves nothing behind."""
        now = self._now()
        self.ua.shutdown(now)
        if self.registration is not None:
            self.registration.stop(now)
        self._flush()
        for _ in range(40):  # up to 2 s for BYE/REGISTER answers
            if not self.calls and not self._pending and not self.ua.busy_clients():
                break
            await asyncio.sleep(0.05)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for endpoint in list(self._pending.values()):
            if endpoint is not None:
                await endpoint.close()
        self._pending.clear()
        if self._timer:
            self._timer.cancel()
        for listener in self.listeners:
            await listener.close()

    async def __aenter__(self) -> SipServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def leftovers(self) -> list[str]:
        """What a call could have left behind (empty after every call has ended)."""
        out = [f"call {c}" for c in self.calls] + [f"pending {c}" for c in self._pending]
        out += [f"dialog {d}" for d in self.ua.calls]
        if self.ports.in_use:
            out.append(f"{self.ports.in_use} RTP port pairs reserved")
        out += [f"task {t.get_name()}" for t in self._tasks if not t.done()]
        return out

    def address(self, transport: str = "UDP") -> tuple[str, int]:
        for listener in self.listeners:
            if listener.address.transport == transport:
                return listener.address.host, listener.port
        raise LookupError(transport)

    # ------------------------------------------------------------------ core plumbing

    def _now(self) -> float:
        return (self._loop or asyncio.get_running_loop()).time()

    def _receive(self, data: bytes, peer: Peer) -> None:
        self.ua.receive(data, peer, self._now())
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        self.ua.handle_timers(self._now())
        self._flush()

    def _flush(self) -> None:
        for item in self.ua.drain():
            if isinstance(item, Send):
                self._send(item)
            elif isinstance(item, CallOffered):
                self._offered(item)
            elif isinstance(item, CallConfirmed):
                self._confirmed(item.call, item.choice)
            elif isinstance(item, MediaChanged):
                self._media_changed(item.call, item.choice)
            elif isinstance(item, CallEnded):
                self._ended(item.call, item.reason)
        deadline = self.ua.next_deadline()
        if deadline is not None and (self._timer is None or self._timer.when() != deadline):
            if self._timer:
                self._timer.cancel()
            assert self._loop is not None
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _send(self, item: Send) -> None:
        peer = item.peer
        candidates = [
            x for x in self.listeners
            if x.address.transport == peer.transport and x.port == peer.local_port
        ]  # fmt: skip
        exact = [x for x in candidates if x.address.host == peer.local_host]
        for listener in exact or candidates:
            listener.send(item.data, peer)
            return
        log.warning("no listener for %s:%d", peer.transport, peer.local_port)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ call events

    def _offered(self, event: CallOffered) -> None:
        codec = event.choice.codec.name if event.choice else "offer in 200"
        if not self.handler.has_room():
            status = self.config.busy_status
            retry = self.config.retry_after if status == 503 else None
            self.ua.reject(event.call, status, self._now(), retry_after=retry)
            log.info(
                "call %s from %s (%s): refused %d, no room",
                event.call,
                event.caller,
                event.source.host,
                status,
            )
            return
        log.info(
            "call %s from %s (%s): offered, %s", event.call, event.caller, event.source.host, codec
        )
        self._pending[event.call] = None
        self._spawn(self._answer(event))

    def _local_media(
        self,
        call_id: str,
        caller: str,
        host: str,
        on_audio: Callable[[bytes, int], None],
        on_dtmf: Callable[[str, int], None],
    ) -> RtpEndpoint:
        return RtpEndpoint(
            self.ports, host, on_audio=on_audio, on_dtmf=on_dtmf, idle=self.config.idle_audio
        )

    async def _answer(self, event: CallOffered) -> None:
        if self.config.ring_s > 0:
            self.ua.ringing(event.call)
            self._flush()
            await asyncio.sleep(self.config.ring_s)
        if event.call not in self._pending:
            return  # cancelled while ringing
        host = self.config.media_host or self.listeners[0].address.host
        endpoint = self._media_factory(
            event.call,
            event.caller,
            host,
            lambda pcm, rate: self._audio(event.call, pcm, rate),
            lambda digit, ms: self._dtmf(event.call, digit, ms),
        )
        try:
            port = await endpoint.open()
        except OSError as exc:
            self._pending.pop(event.call, None)
            self.ua.reject(event.call, 503, self._now(), retry_after=self.config.retry_after)
            self._flush()
            log.warning("call %s: refused 503: %s", event.call, exc)
            return
        if event.call not in self._pending:
            await endpoint.close()
            return
        self._pending[event.call] = endpoint
        if not self.ua.accept(event.call, port, self._now()):
            self._pending.pop(event.call, None)
            await endpoint.close()
            return
        call = SipCall(
            event.call, event.caller, event.source, endpoint, lambda r: self.hangup(event.call, r)
        )
        self.calls[event.call] = call
        self._pending.pop(event.call, None)
        log.info("call %s: answered 200, RTP port %d", event.call, port)
        self._flush()

    def _confirmed(self, call_id: str, choice: MediaChoice) -> None:
        call = self.calls.get(call_id)
        if call is None:
            return
        call.media.configure(choice)
        self._started.add(call_id)
        log.info(
            "call %s: started, %s/%d Hz, RTP to %s:%d, %s",
            call_id, choice.codec.name, choice.codec.audio_rate,
            choice.remote_address, choice.remote_port, choice.direction,
        )  # fmt: skip
        self._call_tasks[call_id] = self._spawn(self._run_handler(call))

    async def _run_handler(self, call: SipCall) -> None:
        try:
            await self.handler.call_started(call)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call %s: handler failed", call.id)
            self.hangup(call.id, "handler error")

    def _media_changed(self, call_id: str, choice: MediaChoice) -> None:
        call = self.calls.get(call_id)
        if call is None:
            return
        was_held = call.on_hold
        call.media.configure(choice)
        state = "on hold" if call.on_hold else ("resumed" if was_held else "media updated")
        log.info("call %s: %s (%s, %s)", call_id, state, choice.codec.name, choice.direction)

    def _audio(self, call_id: str, pcm: bytes, rate: int) -> None:
        call = self.calls.get(call_id)
        if call is not None and call_id in self._started:
            self.handler.caller_audio(call, pcm, rate)

    def _dtmf(self, call_id: str, digit: str, duration_ms: int) -> None:
        call = self.calls.get(call_id)
        if call is not None and call_id in self._started:
            log.info("call %s: DTMF %s (%d ms)", call_id, digit, duration_ms)
            self.handler.dtmf(call, digit, duration_ms)

    def hangup(self, call_id: str, reason: str = "hangup") -> None:
        self.ua.hangup(call_id, reason, self._now())
        self._flush()

    def _ended(self, call_id: str, reason: str) -> None:
        self._pending.pop(call_id, None)
        call = self.calls.get(call_id)
        if call is None:
            log.info("call %s: ended before answer (%s)", call_id, reason)
            return
        call.ended = reason
        self._spawn(self._close_call(call, reason))

    async def _close_call(self, call: SipCall, reason: str) -> None:
        task = self._call_tasks.pop(call.id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        started = call.id in self._started
        self._started.discard(call.id)
        try:
            if started:
                await self.handler.call_ended(call, reason)
        except Exception:
            log.exception("call %s: call_ended handler failed", call.id)
        finally:
            await call.media.close()
            self.calls.pop(call.id, None)
        stats = call.media.stats
        log.info(
            "call %s: ended (%s) after %.1f s, RTP in/out %d/%d packets",
            call.id, reason, time.monotonic() - call.started_at,
            stats.packets_in, stats.packets_out,
        )  # fmt: skip

    # ------------------------------------------------------------------ registration

    async def _start_registration(self, target: RegisterTarget) -> None:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(target.host.strip("[]"), target.port, type=socket.SOCK_DGRAM)
        registrar_ip = str(infos[0][4][0])
        listener = next((x for x in self.listeners if x.address.transport == "UDP"), None)
        if listener is None:
            raise ValueError("--sip-register needs a udp: --sip-listen address")
        local = local_address_for(listener.address.host, registrar_ip)
        peer = Peer("UDP", registrar_ip, target.port, local, listener.port)
        self.registration = Registration(
            self.ua, target, peer, expires=self.config.register_expires,
            contact_host=self.config.public_address,
        )  # fmt: skip
        self.registration.start(self._now())
        self._flush()
