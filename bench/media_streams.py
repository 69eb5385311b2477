"""Phone-call benchmark: click round trip and server CPU per Twilio media stream.

Run: ``python bench/media_streams.py [--calls 10] [--seconds 20]``.

``omni-rtc serve`` runs against ``omni-rtc emulator --reply live`` (every audio chunk comes
straight back), each as its own process on 127.0.0.1. This process plays N far ends the
way Twilio does: 20 ms μ-law frames in real time, with a 20 ms click every 0.7 s; it notes
when each click comes back in the bridge's ``media`` frames. The round trip is the
bridge's own cost both ways (G.711, 8 <-> 16/24 kHz resampling, JSON and base64 on two
WebSockets) plus the emulator's; CPU per call is the server process's, from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import aiohttp
import numpy as np
import stopping

from omni_rtc.media.g711 import ulaw_decode, ulaw_encode

CLICK_EVERY_S = 0.7
SILENCE = b"\xff" * 160
CLICK = ulaw_encode((np.sin(np.arange(160) * 2 * np.pi / 8) * 20000).astype("<i2").tobytes())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FarEnd:
    """One phone call as Twilio streams it; collects click round trips."""

    def __init__(self, url: str, index: int) -> None:
        self.url = url
        self.sid = f"MZ{index:032d}"
        self.clicks_sent: list[float] = []
        self.round_trips: list[float] = []
        self._waiting: float | None = None

    async def run(self, seconds: float) -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(self.url) as ws:
            start = {
                "streamSid": self.sid,
                "callSid": "CA" + self.sid[2:],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {},
            }
            await ws.send_str(json.dumps({"event": "connected", "protocol": "Call"}))
            await ws.send_str(json.dumps({"event": "start", "start": start, "streamSid": self.sid}))
            reader = asyncio.create_task(self._read(ws))
            t0 = time.monotonic()
            frame = 0
            while time.monotonic() - t0 < seconds:
                await asyncio.sleep(max(0.0, t0 + frame * 0.02 - time.monotonic()))
                click = frame % int(CLICK_EVERY_S / 0.02) == 0 and self._waiting is None
                payload = CLICK if click else SILENCE
                if click:
                    self._waiting = time.monotonic()
                    self.clicks_sent.append(self._waiting)
                media = {"payload": base64.b64encode(payload).decode(), "track": "inbound"}
                await ws.send_str(
                    json.dumps({"event": "media", "media": media, "streamSid": self.sid})
                )
                frame += 1
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if data.get("event") != "media" or self._waiting is None:
                continue
            pcm = np.frombuffer(ulaw_decode(base64.b64decode(data["media"]["payload"])), "<i2")
            if pcm.size and np.abs(pcm.astype(np.int32)).max() > 4000:
                self.round_trips.append((time.monotonic() - self._waiting) * 1000)
                self._waiting = None


async def wait_http(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def start_servers(calls: int) -> tuple[int, list[subprocess.Popen[bytes]]]:
    """The emulator (live echo) and the bridge, each in its own process."""
    emu_port, port = free_port(), free_port()
    env = {**os.environ, "DASHSCOPE_API_KEY": "", "OMNI_RTC_LOG_LEVEL": "WARNING"}
    cli = [sys.executable, "-m", "omni_rtc"]
    emulator = subprocess.Popen(
        [*cli, "emulator", "--port", str(emu_port), "--reply", "live", "--log-level", "WARNING"],
        env=env,
    )
    upstream = f"ws://127.0.0.1:{emu_port}/api-ws/v1/realtime"
    server = subprocess.Popen(
        [*cli, "serve", "--port", str(port), "--max-calls", str(calls), "--upstream-url", upstream],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return port, [server, emulator]


async def run(calls: int, seconds: float, port: int, server: subprocess.Popen[bytes]) -> None:
    await wait_http(f"http://127.0.0.1:{port}/healthz")
    ends = [FarEnd(f"ws://127.0.0.1:{port}/twilio/stream", i) for i in range(calls)]
    tasks = [asyncio.create_task(e.run(seconds)) for e in ends]
    await asyncio.sleep(min(3.0, seconds / 4))  # calls set up, resamplers warm
    cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
    await asyncio.sleep(seconds - min(3.0, seconds / 4) - 1.0)
    cpu1, t1 = cpu_seconds(server.pid), time.monotonic()
    await asyncio.gather(*tasks)
    trips = sorted(t for e in ends for t in e.round_trips[1:])
    sent = sum(len(e.clicks_sent) for e in ends)
    print(f"{calls} Twilio media streams for {seconds:.0f} s against the live-echo emulator")
    if trips:
        p90 = trips[int(len(trips) * 0.9)]
        print(
            f"  click round trip: median {statistics.median(trips):.0f} ms, p90 {p90:.0f} ms "
            f"({len(trips)} of {sent} clicks back)"
        )
    print(f"  server CPU per call: {(cpu1 - cpu0) / (t1 - t0) / calls * 100:.1f}% of a core")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    port, processes = start_servers(args.calls)
    try:
        stopping.run(run(args.calls, args.seconds, port, processes[0]))
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
