"""The real commands, as a user runs them: omni-rtc serve (offline, HTTPS) and omni-rtc emulator."""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import socket
import ssl
import sys
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from omni_rtc.realtime import DASHSCOPE, RealtimeClient
from tests.media import load_pcm48
from tests.peer import LoopingPcmTrack, TestPeer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OMNI_RTC_") and k != "DASHSCOPE_API_KEY"
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def start(
    *args: str,
    env: dict[str, str] | None = None,
    new_session: bool = False,
    wrapper: tuple[str, ...] = (),
) -> asyncio.subprocess.Process:
    """``omni-rtc ARGS``; ``new_session`` puts it (and its workers) in a process group;
    ``wrapper`` runs it through a command that ends in ``exec "$@"``."""
    return await asyncio.create_subprocess_exec(
        *wrapper,
        sys.executable,
        "-m",
        "omni_rtc",
        *args,
        env=env or clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=new_session,
    )


async def read_until(
    process: asyncio.subprocess.Process, needle: str, timeout: float = 15.0
) -> str:
    assert process.stdout is not None
    seen = ""

    async def read() -> None:
        nonlocal seen
        while needle not in seen:
            line = await process.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise AssertionError(f"process ended before {needle!r}:\n{seen}")
            seen += line.decode()

    await asyncio.wait_for(read(), timeout)
    return seen


async def stop(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), 10)


async def test_serve_with_no_key_runs_offline_on_the_emulator(speech_wav) -> None:
    port = free_port()
    process = await start("serve", "--port", str(port), "--ice-host-address", "127.0.0.1")
    try:
        banner = await read_until(process, "ICE servers")
        assert f"open http://localhost:{port}/" in banner
        assert "built-in EMULATOR" in banner
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http, http.get(url + "/config") as r:
            assert (await r.json())["emulator"] is True
        peer = TestPeer(url, LoopingPcmTrack(load_pcm48(speech_wav)))
        try:
            await peer.call()
            await peer.wait_connected()
            _, final = await peer.wait_message(
                lambda m: m.get("type") == "transcript" and m["role"] == "assistant" and m["final"],
                timeout=20,
            )
        finally:
            await peer.close()
        assert final["text"].startswith("I heard ")
    finally:
        code = await stop(process)
    assert code == 0  # SIGTERM ends calls and exits cleanly


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_the_built_in_emulator_never_takes_the_servers_own_port(workers: str) -> None:
    """In a namespace whose system picks free ports from two only, the one before ours
    and ours (Linux's bind(0) tries an odd offset into the range first: ours), the
    emulator must leave ours to the server."""
    port = 45001
    script = (
        "ip link set lo up && "
        f"echo '{port - 1} {port}' > /proc/sys/net/ipv4/ip_local_port_range && "
        'exec "$@"'
    )
    unshare = ("unshare", "--net") if os.geteuid() == 0 else ("unshare", "-rn")
    process = await start(
        "serve",
        "--port",
        str(port),
        "--workers",
        workers,
        "--ice-host-address",
        "127.0.0.1",
        wrapper=(*unshare, "sh", "-c", script, "_"),
    )
    try:
        banner = await read_until(process, "ICE servers", timeout=60)
        assert f"open http://localhost:{port}/" in banner
        assert f"ws://127.0.0.1:{port - 1}/" in banner  # the emulator took the other one
    finally:
        code = await stop(process)
    assert code == 0


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_serve_over_https_and_the_healthcheck_command(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    port = free_port()
    env = {
        **clean_env(),
        "OMNI_RTC_PORT": str(port),
        "OMNI_RTC_CERT_FILE": str(cert_file),
        "OMNI_RTC_KEY_FILE": str(key_file),
        "OMNI_RTC_HOST": "127.0.0.1",
    }
    process = await start("serve", env=env)
    try:
        banner = await read_until(process, "ICE servers")
        assert f"open https://localhost:{port}/" in banner
        context = ssl.create_default_context(cafile=str(cert_file))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"https://localhost:{port}/healthz", ssl=context) as r:
                assert r.status == 200
            async with http.get(f"https://localhost:{port}/", ssl=context) as r:
                assert "Content-Security-Policy" in r.headers
        check = await start("healthcheck", env=env)
        assert await asyncio.wait_for(check.wait(), 10) == 0
    finally:
        await stop(process)


async def test_standalone_emulator_logs_each_connection() -> None:
    port = free_port()
    process = await start("emulator", "--port", str(port), "--api-key", "sk-emu-key-1234567890")
    try:
        await read_until(process, "emulator listening")
        url = f"ws://127.0.0.1:{port}/api-ws/v1/realtime"
        client = await RealtimeClient.connect(
            url=DASHSCOPE.url("qwen-omni-turbo-realtime", url),
            api_key="sk-emu-key-1234567890",
            profile=DASHSCOPE,
            session=DASHSCOPE.session_config(),
        )
        await client.close()
        log = await read_until(process, "closed (code 1000)")
    finally:
        await stop(process)
    assert "connected from 127.0.0.1" in log
    assert "model qwen-omni-turbo-realtime" in log
    assert "sk-emu-key-1234567890" not in log


async def test_api_key_never_reaches_logs_even_at_debug(speech_wav) -> None:
    key = "sk-debug-log-secret-5551234"
    emu_port, port = free_port(), free_port()
    emulator = await start("emulator", "--port", str(emu_port), "--api-key", key)
    await read_until(emulator, "emulator listening")
    env = {**clean_env(), "DASHSCOPE_API_KEY": key}
    bridge = await start(
        "serve",
        "--port",
        str(port),
        "--ice-host-address",
        "127.0.0.1",
        "--log-level",
        "DEBUG",
        "--upstream-url",
        f"ws://127.0.0.1:{emu_port}/api-ws/v1/realtime",
        env=env,
    )
    try:
        output = await read_until(bridge, "ICE servers")
        peer = TestPeer(f"http://127.0.0.1:{port}", LoopingPcmTrack(load_pcm48(speech_wav)))
        try:
            await peer.call()
            await peer.wait_connected()
            await peer.wait_message(
                lambda m: m.get("type") == "state" and m["value"] == "speaking", timeout=20
            )
        finally:
            await peer.close()
        output += await read_until(bridge, "ended (peer_closed)")
    finally:
        await stop(bridge)
        await stop(emulator)
    assert bridge.stdout is not None
    output += (await bridge.stdout.read()).decode()
    assert "Authorization: [redacted]" in output  # the header was logged, redacted
    assert key not in output


async def test_sigterm_drains_running_calls_then_ends_them_with_a_reason() -> None:
    from tests.helpers import sine_pcm

    port = free_port()
    process = await start(
        "serve", "--port", str(port), "--ice-host-address", "127.0.0.1", "--drain-seconds", "3"
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await read_until(process, "ICE servers")
        peer = TestPeer(url, LoopingPcmTrack(sine_pcm(1.0, 48_000)))
        try:
            await peer.call()
            await peer.wait_connected()
            process.send_signal(signal.SIGTERM)
            notice_at, notice = await peer.wait_message(lambda m: m.get("type") == "notice")
            async with aiohttp.ClientSession() as http:
                async with http.get(url + "/healthz") as r:
                    health = (r.status, (await r.json())["status"])
                second = TestPeer(url, LoopingPcmTrack(sine_pcm(1.0, 48_000)))
                from tests.peer import OfferRejected

                try:
                    await second.call()
                    refused = None
                except OfferRejected as exc:
                    refused = exc.status
                finally:
                    await second.close()
            ended_at, ended = await peer.wait_message(lambda m: m.get("type") == "ended", 10)
        finally:
            await peer.close()
        code = await asyncio.wait_for(process.wait(), 10)
    finally:
        await stop(process)
    assert "shutting down" in notice["message"]
    assert health == (503, "draining")
    assert refused == 503
    assert ended["reason"] == "server_shutdown"
    assert 2.5 < ended_at - notice_at < 6, ended_at - notice_at  # the call went on meanwhile
    assert code == 0


async def test_a_second_signal_ends_a_drain_at_once() -> None:
    from tests.helpers import sine_pcm

    port = free_port()
    process = await start(
        "serve", "--port", str(port), "--ice-host-address", "127.0.0.1", "--drain-seconds", "60"
    )
    try:
        await read_until(process, "ICE servers")
        peer = TestPeer(f"http://127.0.0.1:{port}", LoopingPcmTrack(sine_pcm(1.0, 48_000)))
        try:
            await peer.call()
            await peer.wait_connected()
            process.send_signal(signal.SIGTERM)
            await peer.wait_message(lambda m: m.get("type") == "notice")
            process.send_signal(signal.SIGINT)
            _, ended = await peer.wait_message(lambda m: m.get("type") == "ended", 5)
        finally:
            await peer.close()
        code = await asyncio.wait_for(process.wait(), 10)
    finally:
        await stop(process)
    assert ended["reason"] == "server_shutdown"
    assert code == 0
