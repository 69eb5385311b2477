"""A WHIP client built on aiortc (RFC 9725 as written), for the integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"


@dataclass
class Reply:
    status: int
    headers: Any
    text: str

    @property
    def links(self) -> list[str]:
        return list(self.headers.getall("Link", []))


async def request(
    method: str, url: str, body: str | bytes | None = None, headers: dict[str, str] | None = None
) -> Reply:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, data=body, headers=headers or {}) as response,
    ):
        return Reply(response.status, response.headers.copy(), await response.text())


def split_candidates(sdp: str) -> tuple[str, list[str]]:
    """The offer without its candidate lines, and those lines (for trickling them)."""
    kept, candidates = [], []
    for line in sdp.splitlines(keepends=True):
        if line.startswith("a=candidate:"):
            if line not in candidates:
                candidates.append(line.strip())
        elif not line.startswith("a=end-of-candidates"):
            kept.append(line)
    return "".join(kept), candidates


def ice_credentials(sdp: str) -> tuple[str, str]:
    ufrag = next(line[12:].strip() for line in sdp.splitlines() if line.startswith("a=ice-ufrag:"))
    pwd = next(line[10:].strip() for line in sdp.splitlines() if line.startswith("a=ice-pwd:"))
    return ufrag, pwd


@dataclass
class WhipPeer:
    """Publishes tracks with WHIP; with ``audio_direction='sendrecv'`` it records the reply."""

    __test__ = False

    endpoint: str
    audio: MediaStreamTrack | None = None
    video: MediaStreamTrack | None = None
    audio_direction: str = "sendonly"
    pc: RTCPeerConnection = field(
        default_factory=lambda: RTCPeerConnection(RTCConfiguration(iceServers=[]))
    )
    resource: str | None = None
    etag: str | None = None
    levels: list[tuple[float, float]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pc.on("track", self._on_track)
        if self.audio is not None:
            self.pc.addTransceiver(self.audio, direction=self.audio_direction)
        if self.video is not None:
            self.pc.addTransceiver(self.video, direction="sendonly")

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._tasks.append(asyncio.create_task(self._record(track)))

    async def _record(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                x = frame.to_ndarray().astype(np.float64) / 32768
                rms = float(np.sqrt(np.mean(x**2)))
                self.levels.append((time.monotonic(), 20 * np.log10(rms + 1e-9)))

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def publish(self, sdp: str, query: str = "") -> Reply:
        reply = await request("POST", self.endpoint + query, sdp, {"Content-Type": SDP})
        if reply.status == 201:
            self.resource = urljoin(self.endpoint, reply.headers["Location"])
            self.etag = reply.headers.get("ETag")
            await self.pc.setRemoteDescription(RTCSessionDescription(reply.text, "answer"))
        return reply

    async def patch(self, fragment: str, headers: dict[str, str] | None = None) -> Reply:
        assert self.resource is not None
        base = {"Content-Type": SDPFRAG}
        if self.etag:
            base["If-Match"] = self.etag
        return await request("PATCH", self.resource, fragment, {**base, **(headers or {})})

    async def delete(self) -> Reply:
        assert self.resource is not None
        return await request("DELETE", self.resource)

    async def wait_connected(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pc.connectionState != "connected":
            if time.monotonic() > deadline:
                raise AssertionError(f"WHIP peer did not connect: {self.pc.connectionState}")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
