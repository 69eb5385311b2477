"""End-to-end benchmark: click round trip and server CPU per call, against a bare aiortc relay.

Run: ``python bench/calls.py [--calls 4] [--seconds 20] [--camera-fps 5]``.

Both servers run as separate processes on 127.0.0.1 and are measured in the same run:

* baseline: a bare aiortc server that relays the caller's audio back (decode + encode,
  nothing else), the floor any WebRTC voice bridge in Python stands on;
* omni-rtc: ``omni-rtc serve`` against ``omni-rtc emulator --reply live``, an upstream
  that returns every audio chunk at once, so the round trip is the bridge's own cost:
  Opus decode, resample to 16 kHz, JSON/base64 over a WebSocket and back, 24 kHz
  reply pacing, Opus encode.

Figures: click round trip (median, p90) and server CPU per call (% of a core, from
/proc), with ratios to the baseline so they survive the machine's noise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import os
import socket
import statistics
import subprocess
import sys
import time

import aiohttp
import av
import numpy as np
import stopping
from aiohttp import web
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from omni_rtc.ice import restrict_host_addresses

RATE = 48_000
FRAME = RATE // 50
CLICK_EVERY_S = 0.7


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ClickTrack(MediaStreamTrack):
    """Silence with a 10 ms 1 kHz burst every CLICK_EVERY_S; notes when each click left."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.index = 0
        self.start: float | None = None
        self.sent: list[float] = []
        t = np.arange(FRAME // 2) / RATE
        self.burst = (0.5 * np.sin(2 * np.pi * 1000 * t) * 32767).astype("<i2")

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        due = self.start + self.index * 0.02
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        samples = np.zeros(FRAME, dtype="<i2")
        every = int(CLICK_EVERY_S * 50)
        if self.index % every == every // 2 and self.index > 50:
            samples[: len(self.burst)] = self.burst
            self.sent.append(time.monotonic())
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate = RATE
        frame.pts = self.index * FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        self.index += 1
        return frame


class VideoTrack(MediaStreamTrack):
    """640x480 camera; 30 fps is what DESIGN.md measured, 5 fps what our page asks for."""

    kind = "video"

    def __init__(self, fps: int) -> None:
        super().__init__()
        self.fps = fps
        self.index = 0
        self.start: float | None = None
        y, x = np.mgrid[0:480, 0:640]
        rgb = np.stack([x % 256, y % 256, (x // 32 + y // 32) % 2 * 255], axis=-1)
        self.base = rgb.astype(np.uint8)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        await asyncio.sleep(max(0.0, self.start + self.index / self.fps - time.monotonic()))
        frame = av.VideoFrame.from_ndarray(
            np.roll(self.base, self.index * 4, axis=1), format="rgb24"
        )
        frame.pts = self.index * (90_000 // self.fps)
        frame.time_base = fractions.Fraction(1, 90_000)
        self.index += 1
        return frame


class Caller:
    def __init__(self, url: str, camera_fps: int) -> None:
        self.url = url
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.clicks = ClickTrack()
        self.pc.addTrack(self.clicks)
        if camera_fps:
            self.pc.addTrack(VideoTrack(camera_fps))
        self.pc.createDataChannel("events")
        self.heard: list[float] = []
        self.task: asyncio.Task[None] | None = None
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self.task = asyncio.create_task(self._listen(track))

    async def _listen(self, track: MediaStreamTrack) -> None:
        loud = False
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                peak = float(np.max(np.abs(frame.to_ndarray())))
                if peak > 3000 and not loud:
                    self.heard.append(time.monotonic())
                loud = peak > 3000

    async def call(self) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        async with aiohttp.ClientSession() as http, http.post(self.url + "/offer", json=offer) as r:
            answer = await r.json()
            if r.status != 200:
                raise RuntimeError(f"offer refused: {answer}")
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))

    def round_trips_ms(self) -> list[float]:
        out = []
        for sent in self.clicks.sent:
            echo = next((h for h in self.heard if sent < h < sent + 0.6), None)
            if echo is not None:
                out.append((echo - sent) * 1000)
        return out

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
        await self.pc.close()


# ------------------------------------------------------------------ baseline server


async def serve_baseline(port: int) -> None:
    """A bare aiortc echo: relay the caller's decoded audio straight back."""
    restrict_host_addresses(["127.0.0.1"])
    relay = MediaRelay()
    pcs: set[RTCPeerConnection] = set()
    drains: set[asyncio.Task[None]] = set()

    async def offer(request: web.Request) -> web.Response:
        data = await request.json()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs.add(pc)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                pc.addTrack(relay.subscribe(track))
            else:
                task = asyncio.create_task(drain(track))
                drains.add(task)
                task.add_done_callback(drains.discard)

        await pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp, "type": "answer"})

    async def drain(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()

    app = web.Application()
    app.router.add_post("/offer", offer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


# ------------------------------------------------------------------ measurement


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_http(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up")
            await asyncio.sleep(0.2)


async def measure(
    name: str, url: str, pid: int, calls: int, seconds: float, camera_fps: int
) -> dict[str, float]:
    callers = [Caller(url, camera_fps) for _ in range(calls)]
    for caller in callers:
        await caller.call()
    await asyncio.sleep(3.0)  # connect and settle
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    trips = [rt for c in callers for rt in c.round_trips_ms()]
    for caller in callers:
        await caller.close()
    cpu_per_call = (cpu1 - cpu0) / (t1 - t0) / calls * 100
    clicks = sum(len(c.clicks.sent) for c in callers)
    if not trips:
        raise RuntimeError(f"{name}: no click came back ({clicks} sent)")
    return {
        "rtt_median_ms": statistics.median(trips),
        "rtt_p90_ms": float(np.percentile(trips, 90)),
        "echoed": len(trips) / max(1, clicks),
        "cpu_per_call_pct": cpu_per_call,
    }


async def run(calls: int, seconds: float, camera_fps: int) -> None:
    env = {**os.environ, "OMNI_RTC_LOG_LEVEL": "WARNING"}
    exe = [sys.executable, "-m", "omni_rtc"]
    base_port, bridge_port, emu_port = free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start(args: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    try:
        baseline = start([sys.executable, __file__, "--serve-baseline", str(base_port)])
        start(
            [*exe, "emulator", "--port", str(emu_port), "--reply", "live", "--log-level", "WARNING"]
        )
        bridge = start(
            [
                *exe,
                "serve",
                "--port",
                str(bridge_port),
                "--ice-host-address",
                "127.0.0.1",
                "--upstream-url",
                f"ws://127.0.0.1:{emu_port}/api-ws/v1/realtime",
                "--api-key",
                "bench",
                "--max-calls",
                str(max(calls, 1)),
            ]
        )
        await wait_http(f"http://127.0.0.1:{base_port}/offer")
        await wait_http(f"http://127.0.0.1:{bridge_port}/healthz")
        results: dict[str, dict[str, float]] = {}
        plan: list[tuple[str, str, int]] = [
            ("bare aiortc relay", f"http://127.0.0.1:{base_port}", baseline.pid),
            ("omni-rtc", f"http://127.0.0.1:{bridge_port}", bridge.pid),
        ]
        for name, url, pid in plan:
            results[name] = await measure(name, url, pid, calls, seconds, camera_fps)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
    kind = f"audio+video (640x480 VP8 {camera_fps} fps)" if camera_fps else "audio"
    print(f"omni-rtc call benchmark: {calls} concurrent {kind} calls, {seconds:.0f} s, 127.0.0.1")
    print(f"{'':22} {'click RTT median':>17} {'p90':>8} {'echoed':>7} {'CPU/call':>9}")
    for name, r in results.items():
        print(
            f"{name:22} {r['rtt_median_ms']:14.0f} ms {r['rtt_p90_ms']:5.0f} ms "
            f"{r['echoed'] * 100:6.0f}% {r['cpu_per_call_pct']:8.1f}%"
        )
    base, ours = results["bare aiortc relay"], results["omni-rtc"]
    print(
        f"ratio omni-rtc / bare relay: RTT {ours['rtt_median_ms'] / base['rtt_median_ms']:.2f}, "
        f"CPU {ours['cpu_per_call_pct'] / base['cpu_per_call_pct']:.2f}"
    )
    print(
        "(omni-rtc's round trip also crosses a WebSocket to the upstream and back, resamples "
        "48->16->24->48 kHz and paces the reply; the relay does none of that)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--camera-fps",
        type=int,
        default=0,
        help="add a 640x480 camera at this rate (0: audio only)",
    )
    parser.add_argument("--serve-baseline", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_baseline:
        asyncio.run(serve_baseline(args.serve_baseline))
        return
    restrict_host_addresses(["127.0.0.1"])
    stopping.run(run(args.calls, args.seconds, args.camera_fps))


if __name__ == "__main__":
    main()
