"""Real SIP clients (sipp, baresip) against an in-process SipServer over a veth pair.

The pair (kit0 10.77.0.1 for the server, kit1 10.77.0.2 for the clients) is created
inside the test's own network namespace (tests/run runs pytest under ``unshare --net``);
nothing is ever created in, or sent to, any other network.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from omni_rtc.sip.demo import EchoHandler
from omni_rtc.sip.handler import SipCallHandler
from omni_rtc.sip.server import SipConfig, SipServer
from omni_rtc.sip.transaction import Peer
from omni_rtc.sip.transport import ListenAddress

SERVER_IP = "10.77.0.1"
CLIENT_IP = "10.77.0.2"
SIP_PORT = 5060
SCENARIOS = Path(__file__).resolve().parent / "sip" / "scenarios"
FIXTURES = Path(__file__).resolve().parent / "sip" / "fixtures"


def ensure_veth() -> bool:
    """Create the veth pair unless it exists; True when this call created it."""
    names = [name for _, name in socket.if_nameindex()]
    if "kit0" in names and "kit1" in names:
        return False
    if names != ["lo"]:
        pytest.fail(
            "SIP interop tests create a veth pair (kit0/kit1, 10.77.0.0/24) and must run in "
            "their own network namespace: use tests/run, or "
            "unshare --net bash -c 'ip link set lo up && exec \"$@\"' _ .venv/bin/python -m pytest"
        )
    commands = [
        ["ip", "link", "add", "kit0", "type", "veth", "peer", "name", "kit1"],
        ["ip", "addr", "add", f"{SERVER_IP}/24", "dev", "kit0"],
        ["ip", "addr", "add", f"{CLIENT_IP}/24", "dev", "kit1"],
        ["ip", "link", "set", "kit0", "up"],
        ["ip", "link", "set", "kit1", "up"],
    ]
    for cmd in commands:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            pytest.fail(
                f"cannot create the veth pair ({' '.join(cmd)}: {result.stderr.strip()}); "
                "the namespace needs root (CAP_NET_ADMIN): run as root or with "
                "unshare --net --map-root-user"
            )
    return True


def remove_veth() -> None:
    """Give the namespace back loopback-only (other tests insist on it)."""
    subprocess.run(["ip", "link", "del", "kit0"], capture_output=True, check=False)


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: tests/run installs baresip-core and sip-tester")


@dataclass
class Tap:
    """Every datagram/stream message the server received, for assertions and fixtures."""

    messages: list[tuple[bytes, Peer]] = field(default_factory=list)

    def requests(self, method: str) -> list[bytes]:
        return [m for m, _ in self.messages if m.startswith(method.encode() + b" ")]


@contextlib.asynccontextmanager
async def sip_server(
    handler: SipCallHandler | None = None, *, tcp: bool = True, **config: object
) -> AsyncIterator[tuple[SipServer, Tap]]:
    created = ensure_veth()
    listen = [ListenAddress("UDP", SERVER_IP, SIP_PORT)]
    if tcp:
        listen.append(ListenAddress("TCP", SERVER_IP, SIP_PORT))
    settings: dict[str, object] = {"allow": [f"{CLIENT_IP}/32"], "rtp_ports": (41000, 41199)}
    settings.update(config)
    cfg = SipConfig(listen=listen, **settings)  # type: ignore[arg-type]
    server = SipServer(cfg, handler or EchoHandler())
    tap = Tap()
    receive = server._receive

    def tapped(data: bytes, peer: Peer) -> None:
        tap.messages.append((data, peer))
        receive(data, peer)

    server._receive = tapped  # type: ignore[method-assign]
    try:
        await server.start()
        yield server, tap
    finally:
        await server.stop()
        if created:
            remove_veth()
    assert_nothing_left(server)


def assert_nothing_left(server: SipServer) -> None:
    assert server.leftovers() == [], server.leftovers()
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert others == [], others


@dataclass
class SippResult:
    returncode: int
    output: str
    errors: str


async def run_sipp(
    scenario: str,
    tmp: Path,
    *,
    calls: int = 1,
    limit: int | None = None,
    rate: float | None = None,
    port: int = 5080,
    extra: tuple[str, ...] = (),
    timeout_s: int = 40,
    transport: str = "u1",
    target: str | None = f"{SERVER_IP}:{SIP_PORT}",
) -> SippResult:
    """Run one sipp scenario from the client address (as UAS when ``target`` is None)."""
    require("sipp")
    cmd = [
        "sipp", *([target] if target else []), "-sf", str(SCENARIOS / f"{scenario}.xml"),
        "-i", CLIENT_IP, "-p", str(port), "-m", str(calls), "-mi", CLIENT_IP,
        "-mp", str(port + 1000), "-t", transport, "-nostdin", "-timeout", f"{timeout_s}s",
        "-timeout_error", "-trace_err", "-trace_msg", "-max_recv_loops", "1000",
        *extra,
    ]  # fmt: skip
    if limit is not None:
        cmd += ["-l", str(limit)]
    if rate is not None:
        cmd += ["-r", str(rate)]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        cwd=tmp,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "TERM": "dumb"},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout_s + 20)
    errors = "".join(p.read_text(errors="replace") for p in tmp.glob(f"{scenario}_*_errors.log"))
    assert proc.returncode is not None
    return SippResult(proc.returncode, out.decode(errors="replace")[-3000:], errors[-3000:])


def sipp_messages(tmp: Path, scenario: str) -> str:
    return "".join(p.read_text(errors="replace") for p in tmp.glob(f"{scenario}_*_messages.log"))
