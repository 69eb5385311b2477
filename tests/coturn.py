"""Debian's coturn started on loopback for a test."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Coturn:
    port: int
    secret: str
    ip: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"turn:{self.ip}:{self.port}?transport=udp"


def _free_port(ip: str) -> int:
    """A port free for both UDP and TCP: coturn listens on both, and a TCP listener
    cannot bind a port that an open TCP connection uses as its local port (seen in CI:
    coturn then runs without listening on TCP)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((ip, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((ip, port))
                except OSError:
                    continue
                return port


@contextlib.contextmanager
def run_coturn(
    secret: str = "test-turn-secret-0123456789", ip: str = "127.0.0.1"
) -> Iterator[Coturn]:
    """coturn listening and relaying on ``ip`` (relay ports 50000-50100)."""
    binary = shutil.which("turnserver")
    if binary is None:
        raise RuntimeError("turnserver (Debian package coturn) is missing: tests/run installs it")
    port = _free_port(ip)
    workdir = Path(tempfile.mkdtemp(prefix="omni-rtc-coturn-"))
    log = workdir / "turn.log"
    process = subprocess.Popen(
        [
            binary,
            f"--listening-ip={ip}",
            f"--relay-ip={ip}",
            f"--listening-port={port}",
            "--min-port=50000",
            "--max-port=50100",
            "--fingerprint",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--realm=omni-rtc",
            "--use-auth-secret",
            f"--static-auth-secret={secret}",
            "--allow-loopback-peers",
            f"--userdb={workdir / 'turndb'}",
            f"--pidfile={workdir / 'turnserver.pid'}",
            f"--log-file={log}",
            "--simple-log",
            "--no-stdout-log",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"coturn exited: {log.read_text() if log.exists() else ''}")
            with socket.socket() as probe:
                if probe.connect_ex((ip, port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"coturn did not listen on {ip}:{port} (TCP) within 10 s")
            time.sleep(0.1)
        yield Coturn(port, secret, ip)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(workdir, ignore_errors=True)
