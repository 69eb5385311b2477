"""An aiortc peer that calls the bridge like a browser would (integration tests, benches)."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack


class LoopingPcmTrack(MediaStreamTrack):
    """Plays mono s16 PCM in a loop as 20 ms frames, paced in real time."""

    kind = "audio"

    def __init__(self, pcm: bytes, rate: int = 48_000) -> None:
        super().__init__()
        self.pcm = pcm
        self.rate = rate
        self.samples = rate // 50
        self.pos = 0
        self.index = 0
        self.start: float | None = None
        self.muted = False

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        due = self.start + self.index * 0.02
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        nbytes = self.samples * 2
        chunk = b""
        while len(chunk) < nbytes:
            take = self.pcm[self.pos : self.pos + nbytes - len(chunk)]
            chunk += take
            self.pos = (self.pos + len(take)) % len(self.pcm)
        if self.muted:
            chunk = bytes(nbytes)
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.samples)
        frame.planes[0].update(chunk)
        frame.sample_rate = self.rate
        frame.pts = self.index * self.samples
        frame.time_base = fractions.Fraction(1, self.rate)
        self.index += 1
        return frame


class PacedVideoTrack(MediaStreamTrack):
    """A camera's clock: ``fps`` frames a second, in real time."""

    kind = "video"

    def __init__(self, fps: int) -> None:
        super().__init__()
        self.fps = fps
        self.index = 0
        self.start: float | None = None

    async def next_index(self) -> int:
        """Wait until the next frame is due; its index."""
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        due = self.start + self.index / self.fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        self.index += 1
        return self.index - 1


def pattern_picture(width: int, height: int) -> np.ndarray:
    """An RGB picture with gradients and a checkerboard (moved sideways per frame)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x % 256, y % 256, (x // 32 + y // 32) % 2 * 255], axis=-1).astype(np.uint8)


class PatternVideoTrack(PacedVideoTrack):
    """A moving test pattern, like a camera."""

    def __init__(self, width: int = 640, height: int = 480, fps: int = 10) -> None:
        super().__init__(fps)
        self.base = pattern_picture(width, height)

    async def recv(self) -> av.VideoFrame:
        index = await self.next_index()
        frame = av.VideoFrame.from_ndarray(np.roll(self.base, index * 4, axis=1), format="rgb24")
        frame.pts = index * (90_000 // self.fps)
        frame.time_base = fractions.Fraction(1, 90_000)
        return frame


class PeriodicKeyVp8Track(PacedVideoTrack):
    """Pre-encoded VP8 (libvpx through PyAV) with a key frame every ``key_every`` frames,
    sent as encoded packets (aiortc only packetizes them), like peer-bench's client or a
    hardware camera: it cannot answer PLIs."""

    def __init__(
        self, width: int = 320, height: int = 240, fps: int = 30, key_every: int = 30
    ) -> None:
        super().__init__(fps)
        encoder = av.CodecContext.create("libvpx", "w")
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
        encoder.time_base = fractions.Fraction(1, fps)
        encoder.gop_size = key_every
        encoder.bit_rate = 300_000
        encoder.options = {"deadline": "realtime", "cpu-used": "8", "keyint_min": str(key_every)}
        base = pattern_picture(width, height)
        self.packets: list[bytes] = []
        for index in range(2 * key_every):
            picture = av.VideoFrame.from_ndarray(
                np.roll(base, index * 4, axis=1), format="rgb24"
            ).reformat(format="yuv420p")
            picture.pts = index
            self.packets += [bytes(p) for p in encoder.encode(picture)]
        self.packets += [bytes(p) for p in encoder.encode(None)]
        self.packets = self.packets[: 2 * key_every]

    async def recv(self) -> av.Packet:
        index = await self.next_index()
        packet = av.Packet(self.packets[index % len(self.packets)])
        packet.pts = index * (90_000 // self.fps)
        packet.time_base = fractions.Fraction(1, 90_000)
        return packet


class OfferRejected(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body
        self.headers = headers


class TestPeer:
    """Calls the bridge; records data-channel messages and the reply audio it hears."""

    __test__ = False

    def __init__(
        self,
        base_url: str,
        audio: MediaStreamTrack,
        video: MediaStreamTrack | None = None,
        configuration: RTCConfiguration | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.base_url = base_url
        self.headers = headers or {}
        """Sent on /offer and DELETE (e.g. Authorization)."""
        self.pc = RTCPeerConnection(configuration or RTCConfiguration(iceServers=[]))
        self.audio = audio
        self.video = video
        self.channel = self.pc.createDataChannel("events")
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.levels: list[tuple[float, float]] = []
        """(monotonic time, RMS in dBFS) of every 20 ms of reply audio received."""
        self.call_id: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)
        self.pc.addTrack(audio)
        if video is not None:
            self.pc.addTrack(video)

    def _on_message(self, text: str) -> None:
        self.messages.append((time.monotonic(), json.loads(text)))

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

    async def call(self, **options: Any) -> dict[str, Any]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer", **options}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.base_url}/offer", json=body, headers=self.headers) as response,
        ):
            data = await response.json()
            if response.status != 200:
                raise OfferRejected(response.status, data, dict(response.headers))
        self.call_id = data["call_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="answer"))
        return data

    async def wait_connected(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pc.connectionState != "connected":
            if time.monotonic() > deadline:
                raise AssertionError(f"peer did not connect: {self.pc.connectionState}")
            await asyncio.sleep(0.05)
        while self.channel.readyState != "open":
            if time.monotonic() > deadline:
                raise AssertionError("data channel did not open")
            await asyncio.sleep(0.05)

    def send(self, message: dict[str, Any]) -> None:
        self.channel.send(json.dumps(message))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m.get("type") == kind]

    async def wait_message(
        self, predicate: Any, timeout: float = 15.0
    ) -> tuple[float, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for at, message in self.messages[seen:]:
                if predicate(message):
                    return at, message
            seen = len(self.messages)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no matching message in {timeout} s; got {[m for _, m in self.messages][-15:]}"
                )
            await asyncio.sleep(0.02)

    async def hangup(self) -> int:
        async with (
            aiohttp.ClientSession() as http,
            http.delete(f"{self.base_url}/calls/{self.call_id}", headers=self.headers) as response,
        ):
            return response.status

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
