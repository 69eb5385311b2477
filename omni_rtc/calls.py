"""The process-local call manager: create a call from an offer, close by id, list.

Kept behind this small interface so a pool of worker processes can own calls later.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiortc import RTCPeerConnection, RTCSessionDescription

from .call import Call
from .config import Settings
from .ice import rtc_configuration
from .metrics import Metrics
from .realtime.client import RealtimeClient
from .realtime.errors import AuthenticationFailed, RealtimeError
from .realtime.session import SessionConfig

log = logging.getLogger("omni_rtc.calls")


class CapacityError(Exception):
    """No room for another call right now."""


class OfferError(ValueError):
    """The offer could not be used (the caller's fault: HTTP 400)."""


@dataclass(frozen=True)
class CallOptions:
    voice: str | None = None
    instructions: str | None = None
    mode: str | None = None
    """``server_vad`` (hands-free) or ``manual`` (push-to-talk); None = server default."""


class CallManager:
    def __init__(self, settings: Settings, upstream_url: str, metrics: Metrics) -> None:
        self.settings = settings
        self.upstream_url = upstream_url
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(
            max_workers=max(2, min(4, os.cpu_count() or 2)), thread_name_prefix="omni-rtc-jpeg"
        )
        self._calls: dict[str, Call] = {}
        self._connecting = 0
        self.accepting = True

    @property
    def active(self) -> int:
        return len(self._calls)

    @property
    def has_room(self) -> bool:
        return self.accepting and len(self._calls) + self._connecting < self.settings.max_calls

    def get(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def list(self) -> list[Call]:
        return list(self._calls.values())

    async def create(self, sdp: str, options: CallOptions) -> tuple[Call, str]:
        """Open the upstream session and answer the offer; the call then runs on its own."""
        session = self.settings.session_config(
            voice=options.voice,
            instructions=options.instructions,
            manual=None if options.mode is None else options.mode == "manual",
        )
        if not self.has_room:
            self.metrics.calls_failed.labels("capacity").inc()
            raise CapacityError(f"this server is at its limit of {self.settings.max_calls} calls")
        self._connecting += 1
        try:
            try:
                client = await self._open_session(session)
            except AuthenticationFailed:
                self.metrics.calls_failed.labels("upstream_auth").inc()
                raise
            except RealtimeError:
                self.metrics.calls_failed.labels("upstream_unavailable").inc()
                raise
            pc = RTCPeerConnection(rtc_configuration(self.settings))
            call = Call(
                call_id=secrets.token_urlsafe(16),
                pc=pc,
                client=client,
                session=session,
                metrics=self.metrics,
                executor=self.executor,
                chunk_ms=self.settings.chunk_ms,
                video_fps=self.settings.video_fps,
                jpeg_limits=self.settings.jpeg_limits,
                idle_audio=self.settings.idle_audio,
                peer_timeout=self.settings.peer_timeout,
                on_closed=self._forget,
                reconnect=lambda: self._open_session(session),
            )
            call.attach()
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
                call.after_remote_description()
                await pc.setLocalDescription(await pc.createAnswer())
            except Exception as exc:
                await call.close("bad_offer")  # ends whatever the offer's tracks started
                self.metrics.calls_failed.labels("bad_offer").inc()
                raise OfferError(
                    f"cannot answer this offer: {exc or exc.__class__.__name__}"
                ) from None
            self._calls[call.id] = call
            call.start()
            log.info(
                "call %s: started (%s, voice %s, upstream session in %.0f ms)",
                call.id,
                "push-to-talk" if session.manual else "hands-free",
                session.voice,
                client.connect_seconds * 1000,
            )
            return call, pc.localDescription.sdp
        finally:
            self._connecting -= 1

    async def _open_session(self, session: SessionConfig) -> RealtimeClient:
        profile = self.settings.profile
        client = await RealtimeClient.connect(
            url=profile.url(self.settings.model_name, self.upstream_url),
            api_key=self.settings.api_key,
            profile=profile,
            session=session,
            open_timeout=self.settings.connect_timeout,
            session_timeout=self.settings.connect_timeout,
        )
        self.metrics.upstream_connect.observe(client.connect_seconds)
        return client

    def _forget(self, call: Call) -> None:
        self._calls.pop(call.id, None)

    async def close(self, call_id: str, reason: str = "hangup") -> bool:
        call = self._calls.get(call_id)
        if call is None:
            return False
        await call.close(reason)
        return True

    async def close_all(self, reason: str = "server_shutdown") -> None:
        self.accepting = False
        calls = list(self._calls.values())
        if calls:
            await asyncio.gather(*(c.close(reason) for c in calls), return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)
