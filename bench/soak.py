"""Soak: many calls ending every way; the server's RSS, fds, threads and tasks must stay flat.

Run: ``python bench/soak.py [--calls 1000] [--parallel 8]`` (inside a network namespace
or on a machine where 127.0.0.1 is fine).  ``omni-rtc serve`` runs as a subprocess
against an emulator in this process (so the script can cut upstream sessions); every
100 calls it prints the server's figures from ``/metrics``.  A benchmark, not a test:
it prints, it does not judge, but the last line says whether growth after the first
100 calls stayed under 2 MB per 100 calls with no thread or fd growth.

Endings, in turn: hang-up (DELETE), the peer closes, the upstream drops (the call
reconnects, then hangs up), the peer never connects (``--peer-timeout``), the peer
vanishes (no ICE, no media: failed after 5 s of silence), an offer aiortc cannot use
(400), the call reaches ``--max-call-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stopping
from calls import ClickTrack, free_port, wait_http

from omni_rtc.emulator import Emulator, EmulatorConfig
from omni_rtc.ice import restrict_host_addresses

ENDINGS = (
    "hangup",
    "peer_closed",
    "upstream_dropped",
    "never_connected",
    "vanished",
    "bad_offer",
    "max_duration",
)


class Soak:
    def __init__(self, url: str, emulator: Emulator) -> None:
        self.url = url
        self.emulator = emulator
        self.outcomes: Counter[str] = Counter()

    async def one(self, http: aiohttp.ClientSession, ending: str) -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(ClickTrack())
        pc.createDataChannel("events")
        try:
            await pc.setLocalDescription(await pc.createOffer())
            sdp = pc.localDescription.sdp
            if ending == "bad_offer":
                sdp = "".join(line for line in sdp.splitlines(True) if "a=ice-" not in line)
            offer = {"sdp": sdp, "type": "offer"}
            async with http.post(self.url + "/offer", json=offer) as r:
                answer = await r.json()
                status = r.status
            if status != 200:
                self.outcomes[f"{ending}: HTTP {status}"] += 1
                return
            call_id = answer["call_id"]
            if ending == "never_connected":
                await asyncio.sleep(2.5)  # past --peer-timeout
                self.outcomes[ending] += 1
                return
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            for _ in range(100):
                if pc.connectionState == "connected":
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            if ending == "hangup":
                async with http.delete(f"{self.url}/calls/{call_id}") as r:
                    self.outcomes[f"{ending}: {r.status}"] += 1
            elif ending == "peer_closed":
                await pc.close()
                self.outcomes[ending] += 1
            elif ending == "upstream_dropped":
                live = [s for s in self.emulator.sessions if not s.closed.is_set()]
                if live:
                    live[-1].abort()  # one of the live sessions: the call reconnects
                await asyncio.sleep(1.5)
                async with http.delete(f"{self.url}/calls/{call_id}") as r:
                    self.outcomes[f"{ending}: {r.status}"] += 1
            elif ending == "vanished":
                for transceiver in pc.getTransceivers():
                    transport = transceiver.sender.transport
                    if transport is not None:
                        await transport.transport.iceGatherer._connection.close()
                await asyncio.sleep(7.0)  # the server fails it after 5 s of silence
                self.outcomes[ending] += 1
            elif ending == "max_duration":
                await asyncio.sleep(3.0)  # --max-call-seconds 3
                self.outcomes[ending] += 1
        finally:
            await pc.close()


async def figures(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with http.get(url + "/metrics") as r:
        text = await r.text()
    wanted = {
        "rss_mb": "process_resident_memory_bytes",
        "fds": "process_open_fds",
        "threads": "omni_rtc_threads",
        "tasks": "omni_rtc_asyncio_tasks",
    }
    out = {}
    for key, name in wanted.items():
        match = re.search(rf"^{name} (\S+)$", text, re.M)
        out[key] = float(match[1]) if match else float("nan")
    out["rss_mb"] /= 1024 * 1024
    active = re.findall(r'^omni_rtc_calls_active\{transport="\w+"\} (\S+)$', text, re.M)
    out["active"] = sum(float(v) for v in active)
    return out


async def run(calls: int, parallel: int) -> None:
    restrict_host_addresses(["127.0.0.1"])
    port = free_port()
    async with Emulator(EmulatorConfig(reply_delay_s=0.05, keep_sessions=50)) as emulator:
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "omni_rtc",
            "serve",
            *("--port", str(port), "--upstream-url", emulator.url, "--api-key", "soak"),
            *("--ice-host-address", "127.0.0.1", "--max-calls", str(parallel * 2)),
            *("--peer-timeout", "2", "--max-call-seconds", "3", "--log-level", "WARNING"),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_http(url + "/healthz")
            soak = Soak(url, emulator)
            rows: list[dict[str, float]] = []
            started = time.monotonic()
            async with aiohttp.ClientSession() as http:
                rows.append({"calls": 0, **await figures(http, url)})
                print_row(rows[-1])
                done = 0
                while done < calls:
                    batch = min(100, calls - done)
                    queue = [ENDINGS[(done + i) % len(ENDINGS)] for i in range(batch)]

                    async def worker(queue: list[str] = queue) -> None:
                        while queue:
                            await soak.one(http, queue.pop())

                    await asyncio.gather(*(worker() for _ in range(parallel)))
                    done += batch
                    await asyncio.sleep(8.0)  # let vanished/timed-out calls end
                    rows.append({"calls": done, **await figures(http, url)})
                    print_row(rows[-1])
            print(f"{calls} calls in {time.monotonic() - started:.0f} s: {dict(soak.outcomes)}")
            verdict(rows)
        finally:
            server.terminate()
            await server.wait()


def print_row(row: dict[str, float]) -> None:
    print(
        f"after {row['calls']:5.0f} calls: RSS {row['rss_mb']:7.1f} MB  fds {row['fds']:4.0f}  "
        f"threads {row['threads']:3.0f}  tasks {row['tasks']:4.0f}  active {row['active']:.0f}",
        flush=True,
    )


def verdict(rows: list[dict[str, float]]) -> None:
    if len(rows) < 3:
        return
    first, last = rows[1], rows[-1]
    hundreds = (last["calls"] - first["calls"]) / 100
    growth = (last["rss_mb"] - first["rss_mb"]) / max(1.0, hundreds)
    deltas = {k: last[k] - first[k] for k in ("fds", "threads", "tasks")}
    flat = growth < 2 and deltas["fds"] <= 0 and deltas["threads"] <= 0
    print(
        f"after the first 100 calls: RSS {growth:+.2f} MB per 100 calls, "
        + ", ".join(f"{k} {v:+.0f}" for k, v in deltas.items())
        + f" ({'flat' if flat else 'GROWING'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    stopping.run(run(args.calls, args.parallel))


if __name__ == "__main__":
    main()
