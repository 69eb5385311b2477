"""SIP/RTP benchmark: CPU per G.711 call, concurrent G.711 calls one core keeps in real
time, and the latency the RTP endpoint adds in each direction.

Run: ``python bench/sip.py [--calls 10,25,50,75] [--seconds 6] [--server bridge|demo]
[--every S]``. Prints figures, not a test.  The server runs as its own process pinned to CPU 0:
``bridge`` (default) is ``omni-rtc serve --sip-listen`` talking to ``omni-rtc emulator
--reply live`` (every caller chunk comes straight back as reply audio: the whole model
path, conversation, resampling, WebSocket, JSON and base64 included); ``demo`` is
``python -m omni_rtc.sip`` with the demo echo handler (the SIP/RTP layer alone, the
baseline).  This script is the load client (pinned to CPU 1, with the emulator): it
dials N calls over SIP on 127.0.0.1, streams 20 ms PCMU packets on each and counts the
echoed packets. A step is "real time" when >= 97% of the echo packets arrive and the
99th percentile of their inter-arrival gap stays under 40 ms. Each call is silent until
the step's window opens, so the first echoed packet after that times the round trip of
a tone onset through the bridge and the model path (SIP's counterpart of peer-bench's
beeps); the server's RSS at the end of the window, less its idle RSS, gives the memory
per call. ``--every S`` prints the RSS and the worst call's echo every S seconds of a
step: ``--calls 50 --seconds 1800 --every 60`` is the 30-minute memory run. All traffic stays on
127.0.0.1 and every run is bounded in calls and seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import stopping

from omni_rtc.sip.codecs import AudioEncoder, pcm_frame
from omni_rtc.sip.media import RtpEndpoint
from omni_rtc.sip.message import Response, parse
from omni_rtc.sip.ports import PortPool
from omni_rtc.sip.sdp import PCMU, MediaChoice, SessionDescription

HOST = "127.0.0.1"
SIP_PORT = 25060


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The process's children (worker processes)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """The process and its children (worker processes)."""
    total = cpu_seconds(pid)
    for child in children(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += cpu_seconds(child)
    return total


def tree_rss_mb(pid: int) -> float:
    """Resident memory of the process and its children, MB."""
    total = 0.0
    for member in (pid, *children(pid)):
        with contextlib.suppress(OSError, StopIteration, ValueError):
            with open(f"/proc/{member}/status") as f:
                line = next(line for line in f if line.startswith("VmRSS:"))
            total += int(line.split()[1]) / 1024
    return total


class Rtp(asyncio.DatagramProtocol):
    """Arrival times of the packets that carry the echoed tone (silence is not counted:
    the bridge sends silence while the model is quiet, so counting it would hide a
    reply path that fell behind)."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if len(data) > 12 and data[12:].strip(b"\xff\x7f\xfe\x7e"):
            self.arrivals.append(time.monotonic())


class Sip(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.responses: asyncio.Queue[Response] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        msg = parse(data)
        if isinstance(msg, Response):
            self.responses.put_nowait(msg)


@dataclass
class Call:
    index: int
    sip: asyncio.DatagramTransport
    sip_proto: Sip
    rtp: asyncio.DatagramTransport
    rtp_proto: Rtp
    call_id: str = field(default_factory=lambda: secrets.token_hex(8))
    to_tag: str = ""
    remote_rtp: tuple[str, int] = ("", 0)
    seq: int = 0

    def headers(self, method: str, cseq: int, tag: bool) -> str:
        sip_port = self.sip.get_extra_info("sockname")[1]
        to = f"<sip:bot@{HOST}:{SIP_PORT}>" + (f";tag={self.to_tag}" if tag else "")
        return (
            f"{method} sip:bot@{HOST}:{SIP_PORT} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{sip_port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            f"From: <sip:load{self.index}@{HOST}>;tag=t{self.index}\r\nTo: {to}\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
            f"Contact: <sip:load{self.index}@{HOST}:{sip_port}>\r\n"
        )

    async def dial(self) -> None:
        rtp_port = self.rtp.get_extra_info("sockname")[1]
        sdp = (
            f"v=0\r\no=- 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
            f"m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        invite = self.headers("INVITE", 1, False) + "Content-Type: application/sdp\r\n"
        self.sip.sendto(f"{invite}Content-Length: {len(sdp)}\r\n\r\n{sdp}".encode())
        while True:
            response = await asyncio.wait_for(self.sip_proto.responses.get(), 10)
            if response.status >= 200:
                break
        if response.status != 200:
            raise RuntimeError(f"call {self.index}: {response.status} {response.reason}")
        self.to_tag = response.to().tag or ""
        answer = SessionDescription.parse(response.body)
        self.remote_rtp = (HOST, answer.media[0].port)
        self.sip.sendto((self.headers("ACK", 1, True) + "Content-Length: 0\r\n\r\n").encode())

    async def hang_up(self) -> None:
        self.sip.sendto((self.headers("BYE", 2, True) + "Content-Length: 0\r\n\r\n").encode())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.sip_proto.responses.get(), 5)


def pcmu_payloads(seconds: float) -> list[bytes]:
    encoder = AudioEncoder(PCMU, 8000)
    t = np.arange(int(seconds * 8000)) / 8000
    tone = (0.3 * 32767 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()
    return [encoder.encode(pcm_frame(tone[i : i + 320], 8000))[0] for i in range(0, len(tone), 320)]


async def load_step(
    n: int, seconds: float, server_pid: int, *, every: float = 0.0
) -> dict[str, float]:
    """N calls for ``seconds``: CPU and RSS of the server's process tree, echo received,
    gaps, onset round trip.

    With ``every``, prints the server's RSS and the worst call's share of echo packets
    every ``every`` seconds of the window.
    """
    loop = asyncio.get_running_loop()
    calls: list[Call] = []
    for i in range(n):
        sip, sip_proto = await loop.create_datagram_endpoint(
            Sip, local_addr=(HOST, 0), remote_addr=(HOST, SIP_PORT)
        )
        rtp, rtp_proto = await loop.create_datagram_endpoint(Rtp, local_addr=(HOST, 0))
        calls.append(Call(i, sip, sip_proto, rtp, rtp_proto))
    try:
        for call in calls:
            await call.dial()
        payloads = pcmu_payloads(1.0)
        header = bytearray(b"\x80\x00\x00\x00" + bytes(8))
        await asyncio.sleep(2.0)  # sessions opened: the window measures steady calls
        for call in calls:
            call.rtp_proto.arrivals.clear()
        cpu0, t0 = tree_cpu_seconds(server_pid), time.monotonic()
        ticks = int(seconds * 50)
        sample_ticks = round(every * 50)
        counted = [0] * n
        for tick in range(ticks):
            due = t0 + tick * 0.02
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if sample_ticks and tick and tick % sample_ticks == 0:
                now = [len(call.rtp_proto.arrivals) for call in calls]
                worst = min(b - a for a, b in zip(counted, now, strict=True)) / sample_ticks
                counted = now
                print(
                    f"  {tick / 50 / 60:6.1f} min  RSS {tree_rss_mb(server_pid):6.1f} MB  "
                    f"echo received (worst call) {worst * 100:5.1f}%",
                    flush=True,
                )
            payload = payloads[tick % len(payloads)]
            for call in calls:
                header[2:4] = (tick % 65536).to_bytes(2, "big")
                header[4:8] = (tick * 160 % 2**32).to_bytes(4, "big")
                header[8:12] = (call.index + 1).to_bytes(4, "big")
                call.rtp.sendto(bytes(header) + payload, call.remote_rtp)
        await asyncio.sleep(0.3)
        elapsed = time.monotonic() - t0
        cpu = (tree_cpu_seconds(server_pid) - cpu0) / elapsed
        rss = tree_rss_mb(server_pid)
        received, gaps, onsets = [], [], []
        for call in calls:
            arrivals = [a for a in call.rtp_proto.arrivals if a <= t0 + seconds]
            received.append(len(arrivals) / (seconds * 50))
            gaps += list(np.diff(arrivals))
            if arrivals:
                onsets.append(arrivals[0] - t0)
        return {
            "calls": n,
            "cpu_percent": cpu * 100,
            "cpu_per_call": cpu * 100 / n,
            "received": min(received) if received else 0.0,
            "gap_p99_ms": float(np.percentile(gaps, 99)) * 1000 if gaps else 0.0,
            "onset_median_ms": statistics.median(onsets) * 1000 if onsets else float("nan"),
            "onset_max_ms": max(onsets) * 1000 if onsets else float("nan"),
            "rss_mb": rss,
        }
    finally:
        for call in calls:
            with contextlib.suppress(Exception):
                await call.hang_up()
            call.sip.close()
            call.rtp.close()


async def endpoint_latency(idle: str, rounds: int = 40) -> tuple[list[float], list[float]]:
    """(reply: push -> first reply packet on the wire, uplink: packet -> on_audio), ms."""
    loop = asyncio.get_running_loop()
    heard: asyncio.Queue[float] = asyncio.Queue()
    got_audio: asyncio.Queue[float] = asyncio.Queue()

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
            if data[12:] != b"\xff" * 160:  # not PCMU silence
                heard.put_nowait(time.monotonic())

    sink, _ = await loop.create_datagram_endpoint(Sink, local_addr=(HOST, 0))
    ep = RtpEndpoint(PortPool(46000, 46100), HOST, idle=idle,
                     on_audio=lambda pcm, rate: got_audio.put_nowait(time.monotonic()),
                     on_dtmf=lambda d, ms: None)  # fmt: skip
    port = await ep.open()
    ep.configure(MediaChoice(PCMU, 0, None, HOST, sink.get_extra_info("sockname")[1], "sendrecv"))
    assert ep.reply_track is not None
    tone = pcmu_payloads(0.02)[0]
    reply, uplink = [], []
    try:
        await asyncio.sleep(0.2)
        for i in range(rounds):
            await asyncio.sleep(0.1 + (i * 7 % 20) / 1000)  # spread over the 20 ms frame
            while not heard.empty():
                heard.get_nowait()
            pushed = time.monotonic()
            ep.reply_track.push(b"\x10\x20" * 160)
            reply.append((await asyncio.wait_for(heard.get(), 1) - pushed) * 1000)
            sent = time.monotonic()
            packet = b"\x80\x00" + (i + 1).to_bytes(2, "big") + bytes(4) + b"\x00\x00\x00\x09"
            sink.sendto(packet + tone, (HOST, port))
            uplink.append((await asyncio.wait_for(got_audio.get(), 1) - sent) * 1000)
    finally:
        await ep.close()
        sink.close()
    return reply, uplink


def med(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} ms, p95 {np.percentile(values, 95):.2f} ms"


async def stop_processes(*processes: asyncio.subprocess.Process | None) -> None:
    """Each one terminated (killed if it does not exit in 20 s), whatever the others do."""
    for process in processes:
        if process is None or process.returncode is not None:
            continue
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def main(steps: list[int], seconds: float, kind: str, every: float) -> None:
    for idle in ("silence", "nothing"):
        reply, uplink = await endpoint_latency(idle)
        print(f"ReplyTrack(idle={idle}): push -> first reply RTP packet: {med(reply)}")
        if idle == "silence":
            print(f"caller RTP packet -> caller_audio callback: {med(uplink)}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sip = ["--sip-listen", f"udp:{HOST}:{SIP_PORT}", "--sip-allow", f"{HOST}/32",
           "--rtp-ports", "45000-45999", "--log-level", "WARNING"]  # fmt: skip
    emulator = None
    if kind == "demo":
        cmd = ["taskset", "-c", "0", sys.executable, "-m", "omni_rtc.sip", *sip,
               "--reply", "echo", "--delay", "0", "--max-calls", "500"]  # fmt: skip
    else:
        up = free_port()
        emulator = await asyncio.create_subprocess_exec(
            "taskset", "-c", "1", sys.executable, "-m", "omni_rtc", "emulator",
            "--port", str(up), "--reply", "live", "--log-level", "WARNING", env=env,
        )  # fmt: skip
        cmd = ["taskset", "-c", "0", sys.executable, "-m", "omni_rtc", "serve", *sip,
               "--port", str(free_port()), "--upstream-url", f"ws://{HOST}:{up}/api-ws/v1/realtime",
               "--api-key", "bench", "--max-calls", "500"]  # fmt: skip
    print(f"server: {' '.join(cmd[3:])}")
    server = await asyncio.create_subprocess_exec(*cmd, env=env)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {1})
    try:
        await asyncio.sleep(1.5)
        idle0, t0 = cpu_seconds(server.pid), time.monotonic()
        await asyncio.sleep(2)
        idle_cpu = (cpu_seconds(server.pid) - idle0) / (time.monotonic() - t0) * 100
        idle_rss = tree_rss_mb(server.pid)
        print(f"server idle: {idle_cpu:.1f}% of a core, RSS {idle_rss:.1f} MB")
        print(
            "calls  server CPU  per call  echo received (worst call)  gap p99  real time"
            "  onset round trip (median, max)  RSS MB (per call)"
        )
        for n in steps:
            r = await load_step(n, seconds, server.pid, every=every)
            ok = r["received"] >= 0.97 and r["gap_p99_ms"] < 40
            per_call_mb = (r["rss_mb"] - idle_rss) / n
            print(
                f"{n:5d}  {r['cpu_percent']:9.1f}%  {r['cpu_per_call']:7.2f}%  "
                f"{r['received'] * 100:25.1f}%  {r['gap_p99_ms']:6.1f} ms  "
                f"{'yes' if ok else 'NO ':9s}  "
                f"{r['onset_median_ms']:8.1f} ms, {r['onset_max_ms']:6.1f} ms       "
                f"{r['rss_mb']:6.1f} ({per_call_mb:.2f})",
                flush=True,
            )
            await asyncio.sleep(1.0)
            if not ok:
                break
    finally:
        await stop_processes(server, emulator)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", default="10,25,50,75,100")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--server", choices=("bridge", "demo"), default="bridge")
    parser.add_argument(
        "--every", type=float, default=0.0, help="print RSS and echo every S seconds of a step"
    )
    args = parser.parse_args()
    if args.every != 0 and args.every < 0.02:
        parser.error("--every: at least 0.02 seconds (one packet), or 0 for none")
    stopping.run(
        main([int(x) for x in args.calls.split(",")], args.seconds, args.server, args.every)
    )
