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

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def run_coturn(secret: str = "test-turn-secret-0123456789") -> Iterator[Coturn]:
    binary = shutil.which("turnserver")
    if binary is None:
        raise RuntimeError("turnserver (Debian package coturn) is missing: tests/run installs it")
    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="omni-rtc-coturn-"))
    log = workdir / "turn.log"
    process = subprocess.Popen(
        [
            binary,
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
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
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("coturn did not start")
            time.sleep(0.1)
        yield Coturn(port, secret)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(workdir, ignore_errors=True)
