"""Long A/V calls: does the server's memory stay flat over a 30-minute run?

Run: ``python bench/long_calls.py [--calls 8] [--minutes 30] [--every 60] [--spacing S]
[--clip WEBM] [--serve-arg=ARG ...] [--beeps PEER_BENCH [--beep-calls N]]`` (inside a
network namespace, or where 127.0.0.1 is fine; ``--spacing``: seconds between call
starts, so that the server's overload guard can refuse the calls it cannot hold;
``--clip``: replay a WebM's VP8 and Opus instead, e.g. peer-bench's ``media/av.webm``;
``--serve-arg``: passed on to ``omni-rtc serve``, e.g.
``--serve-arg=--max-loop-busy=0``; ``--beeps``: 15 s after the calls are up, one more
call beside them plays peer-bench's beeps through the bridge and back (its
``peers/peer_client.py latency``), so the beep round trip is measured under this load
rather than on an idle server;
``--beep-calls N``: N such calls one after another, and the median over all their beeps,
since one call's median moves ±20 ms). ``omni-rtc serve --workers 1`` runs pinned
to CPU 0 against ``omni-rtc emulator --reply live`` (every caller chunk comes straight back as
reply audio); this script, on CPU 1, holds N calls open, each sending a 640x480 30 fps VP8
camera (a key frame a second, like peer-bench's client) and Opus audio, both encoded once
up front and replayed in a loop, and counts the reply packets it gets without decoding
them, so the client costs little. Every ``--every`` seconds it prints the server's RSS,
fds and threads, the calls still up, the reply frames the worst connected call received
per second (50 = real time), the images the upstream got per call, the reply frames padded
per call (the live reply is the caller's audio: caller audio that reached the upstream
late shows here), and the CPU of the server, the emulator and this client (100 = one
core). A benchmark, not a test: it prints figures; the last line compares the RSS at the
end with the RSS at ``--warmup-minutes`` (the allocator grows for a while before it
settles: 15 minutes for 8 calls here). This clip (synthetic, 800 kbit/s) costs the server
more than peer-bench's: one core holds about 16 of these calls here, not 24.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from omni_rtc.ice import restrict_host_addresses
from omni_rtc.transports import aiortc_fastpath as fastpath

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stopping
from calls import wait_http
from sip import HOST, cpu_seconds, free_port, stop_processes

FPS = 30
BEEPS_AFTER_S = 15.0
"""The beep call starts this long after the load is up (its first second is the worst)."""
VIDEO_CLOCK = fractions.Fraction(1, 90_000)
AUDIO_CLOCK = fractions.Fraction(1, 48_000)


def encode_clip(seconds: int = 10) -> tuple[list[bytes], list[bytes]]:
    """VP8 640x480 30 fps (GOP 30, 800 kbit/s) and 20 ms Opus packets of a warbling tone."""
    video = av.CodecContext.create("libvpx", "w")
    video.width, video.height, video.pix_fmt = 640, 480, "yuv420p"
    video.time_base = fractions.Fraction(1, FPS)
    video.bit_rate, video.gop_size = 800_000, FPS
    video.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    y, x = np.mgrid[0:480, 0:640]
    frames: list[bytes] = []
    for i in range(seconds * FPS):
        rgb = np.stack([(x + 4 * i) % 256, (y + 2 * i) % 256, (x + y + i) % 256], -1)
        frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = i
        frames += [bytes(p) for p in video.encode(frame)]
    frames += [bytes(p) for p in video.encode(None)]
    audio = av.CodecContext.create("libopus", "w")
    audio.sample_rate, audio.layout, audio.format = 48_000, "mono", "s16"
    audio.bit_rate = 32_000
    t = np.arange(seconds * 48_000) / 48_000
    tone = 0.3 * np.sin(2 * np.pi * (300 + 100 * np.sin(2 * np.pi * 0.5 * t)) * t)
    pcm = (tone * 32767).astype("<i2")
    packets: list[bytes] = []
    for i in range(0, len(pcm) - 960 + 1, 960):
        chunk = av.AudioFrame.from_ndarray(pcm[None, i : i + 960], format="s16", layout="mono")
        chunk.sample_rate, chunk.pts = 48_000, i
        packets += [bytes(p) for p in audio.encode(chunk)]
    return frames, packets


def read_clip(path: str) -> tuple[list[bytes], list[bytes]]:
    """A WebM's VP8 frames and Opus packets, as they are stored (30 fps, 20 ms expected)."""
    streams: dict[str, list[bytes]] = {"video": [], "audio": []}
    with av.open(path) as container:
        for packet in container.demux(video=0, audio=0):
            if packet.size:
                streams[packet.stream.type].append(bytes(packet))
    return streams["video"], streams["audio"]


class LoopedPackets(MediaStreamTrack):
    """Pre-encoded packets sent in a loop at their own pace (aiortc only packetizes)."""

    def __init__(self, kind: str, packets: list[bytes], step: int, clock: fractions.Fraction):
        super().__init__()
        self.kind = kind
        self._packets, self._step, self._clock = packets, step, clock
        self._interval = float(step * clock)
        self._index = 0
        self._start: float | None = None

    async def recv(self) -> av.Packet[Any]:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._index * self._interval
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        packet = av.Packet(self._packets[self._index % len(self._packets)])
        packet.pts, packet.time_base = self._index * self._step, self._clock
        self._index += 1
        return packet


class Call:
    """One caller: looped camera and microphone out, reply frames counted in."""

    def __init__(self, video: list[bytes], audio: list[bytes]) -> None:
        self.pc = RTCPeerConnection()
        self.pc.addTrack(LoopedPackets("audio", audio, 960, AUDIO_CLOCK))
        self.pc.addTrack(LoopedPackets("video", video, 90_000 // FPS, VIDEO_CLOCK))
        self.pc.createDataChannel("events")
        self.frames = 0
        self.readers: list[asyncio.Future[None]] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        receiver = next(t.receiver for t in self.pc.getTransceivers() if t.receiver.track is track)
        if fastpath.take_encoded_frames(receiver, self._count, on_end=_nothing):
            return  # count reply packets without decoding them: the client stays light

        async def drain() -> None:
            with contextlib.suppress(Exception):
                while True:
                    await track.recv()
                    self.frames += 1

        self.readers.append(asyncio.ensure_future(drain()))

    def _count(self, codec: Any, data: bytes, timestamp: int) -> None:
        self.frames += 1

    async def start(self, http: aiohttp.ClientSession, url: str) -> bool:
        """Call; False (and the connection closed) when the server is full or overloaded."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        async with http.post(f"{url}/offer", json=offer) as response:
            answer = await response.json()
            if response.status == 503:
                print(f"  call refused: {answer['error']}", flush=True)
                await self.pc.close()
                return False
            if response.status != 200:
                raise RuntimeError(f"/offer: {response.status} {answer}")
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        return True


def _nothing() -> None:
    pass


def process_figures(pid: int) -> tuple[float, int, int]:
    """RSS (MB), open fds and threads of one process."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_mb = int(fields["VmRSS"].split()[0]) / 1024
    return rss_mb, len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"])


async def metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    """A counter or gauge from /metrics, summed over its labels."""
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


async def beep_round_trip(peer_bench: Path, url: str, calls: int = 1) -> str:
    """peer-bench's latency client beside the load, ``calls`` calls of 10 beeps one after
    another: each call's summary, and the median over every beep."""
    await asyncio.sleep(BEEPS_AFTER_S)
    lines: list[str] = []
    every_beep: list[float] = []
    for _ in range(calls):
        summary, latencies = await one_beep_call(peer_bench, url)
        lines.append(summary)
        every_beep += latencies
    if calls > 1 and every_beep:
        lines.append(
            f"beep round trip over {calls} calls: median {statistics.median(every_beep):.1f} ms "
            f"of {len(every_beep)} beeps"
        )
    return "\n".join(lines)


async def one_beep_call(peer_bench: Path, url: str) -> tuple[str, list[float]]:
    client = await asyncio.create_subprocess_exec(
        sys.executable, str(peer_bench / "peers" / "peer_client.py"), "latency",
        "--url", url, "--mode", "none",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await client.communicate()
    finally:
        if client.returncode is None:
            client.kill()
            await client.wait()
    lines = out.decode().strip().splitlines()
    if client.returncode != 0 or not lines:
        last = err.decode().strip().splitlines()[-1:] or [f"exit {client.returncode}"]
        return f"beep call failed: {last[0]}", []
    result = json.loads(lines[-1])
    if "median_ms" not in result:
        return f"beep call: no beep came back ({result})", []
    latencies = [float(ms) for ms in result["latency_ms"]]
    return (
        f"beep round trip beside the calls: median {result['median_ms']} ms "
        f"({result['min_ms']}-{result['max_ms']}), "
        f"{len(latencies)} of {result['beeps_sent']} beeps back; in order: "
        + " ".join(f"{ms:.0f}" for ms in latencies)
    ), latencies


async def main(
    calls: int,
    minutes: float,
    every: float,
    warmup: float,
    spacing: float,
    clip: str | None,
    serve_args: list[str],
    peer_bench: Path | None,
    beep_calls: int = 1,
) -> None:
    video, audio = read_clip(clip) if clip else encode_clip()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    up, port = free_port(), free_port()
    emulator = await asyncio.create_subprocess_exec(
        "taskset", "-c", "1", sys.executable, "-m", "omni_rtc", "emulator", "--port", str(up),
        "--reply", "live", "--log-level", "WARNING", env=env,
    )  # fmt: skip
    server = await asyncio.create_subprocess_exec(
        "taskset", "-c", "0", sys.executable, "-m", "omni_rtc", "serve", "--workers", "1",
        "--port", str(port), "--upstream-url", f"ws://{HOST}:{up}/api-ws/v1/realtime",
        "--api-key", "bench", "--ice-host-address", HOST, "--max-calls", "64",
        "--log-level", "WARNING", *serve_args, env=env,
    )  # fmt: skip
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {1})
    restrict_host_addresses([HOST])
    url = f"http://{HOST}:{port}"
    running: list[Call] = []
    beeps: asyncio.Task[str] | None = None
    try:
        async with aiohttp.ClientSession() as http:
            await wait_http(f"{url}/healthz", timeout=20)
            for _ in range(calls):
                call = Call(video, audio)
                if await call.start(http, url):
                    running.append(call)
                await asyncio.sleep(spacing)
            print(
                f"{len(running)} of {calls} A/V calls up; "
                f"sampling every {every:.0f} s for {minutes:.0f} min"
            )
            print(
                "  min  RSS MB  fds  threads  calls  reply fps (worst)  images/s per call"
                "  padded/s per call  CPU % (server, emulator, client)"
            )
            if peer_bench is not None:
                beeps = asyncio.create_task(beep_round_trip(peer_bench, url, beep_calls))
            samples: list[tuple[float, float]] = []  # (minute, RSS MB)
            frames0 = [c.frames for c in running]
            images0, t0 = await metric(http, url, "omni_rtc_images_sent_total"), time.monotonic()
            padded0 = await metric(http, url, "omni_rtc_reply_underruns_total")
            pids = (server.pid, emulator.pid, os.getpid())
            cpu0 = [cpu_seconds(pid) for pid in pids]
            start = t0
            while time.monotonic() - start < minutes * 60:
                await asyncio.sleep(every)
                now = time.monotonic()
                rss, fds, threads = process_figures(server.pid)
                cpu = [cpu_seconds(pid) for pid in pids]
                busy = "  ".join(
                    f"{100 * (c1 - c0) / (now - t0):5.1f}" for c1, c0 in zip(cpu, cpu0, strict=True)
                )
                frames = [c.frames for c in running]
                live = [c.pc.connectionState == "connected" for c in running]
                rates = zip(frames, frames0, live, strict=True)
                fps = min(((f - f0) / (now - t0) for f, f0, up in rates if up), default=0.0)
                images = await metric(http, url, "omni_rtc_images_sent_total")
                active = await metric(http, url, "omni_rtc_calls_active")
                ours = max(1, sum(live))  # the A/V calls, not the beep call beside them
                per_call = (images - images0) / (now - t0) / ours
                padded = await metric(http, url, "omni_rtc_reply_underruns_total")
                padded_per_call = (padded - padded0) / (now - t0) / ours
                samples.append(((now - start) / 60, rss))
                print(
                    f"{(now - start) / 60:5.1f}  {rss:6.1f}  {fds:3d}  {threads:7d}  "
                    f"{active:5.0f}  {fps:17.1f}  {per_call:17.2f}  {padded_per_call:17.2f}  "
                    f"{busy}",
                    flush=True,
                )
                frames0, images0, padded0, cpu0, t0 = frames, images, padded, cpu, now
            settled = [sample for sample in samples if sample[0] >= warmup]
            if len(settled) >= 2:
                (m0, rss0), (m1, rss1) = settled[0], settled[-1]
                print(
                    f"RSS {rss0:.1f} MB at {m0:.0f} min -> {rss1:.1f} MB at {m1:.0f} min "
                    f"({rss1 - rss0:+.1f} MB after warm-up)"
                )
            if beeps is not None:
                print(await beeps)
    finally:
        if beeps is not None:
            beeps.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beeps
        for call in running:
            await call.pc.close()
        await stop_processes(server, emulator)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--every", type=float, default=60)
    parser.add_argument("--warmup-minutes", type=float, default=15)
    parser.add_argument(
        "--spacing", type=float, default=0.0, help="seconds between call starts (default 0)"
    )
    parser.add_argument("--clip", help="a WebM whose VP8 and Opus are replayed instead")
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="an argument for omni-rtc serve (repeat), e.g. --serve-arg=--max-loop-busy=0",
    )
    parser.add_argument(
        "--beeps",
        type=Path,
        metavar="PEER_BENCH",
        help="peer-bench's directory: measure its beep round trip beside the calls",
    )
    parser.add_argument(
        "--beep-calls",
        type=int,
        default=1,
        help="with --beeps: this many beep calls one after another (10 beeps each)",
    )
    args = parser.parse_args()
    if args.beep_calls < 1:
        parser.error("--beep-calls must be at least 1")
    if args.beeps is not None and not (args.beeps / "peers" / "peer_client.py").is_file():
        parser.error(f"--beeps: no peers/peer_client.py under {args.beeps}")
    stopping.run(
        main(
            args.calls,
            args.minutes,
            args.every,
            args.warmup_minutes,
            args.spacing,
            args.clip,
            args.serve_arg,
            args.beeps,
            args.beep_calls,
        )
    )
