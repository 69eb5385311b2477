"""Debian's simple-whip-client (GStreamer webrtcbin + libnice) publishes to /whip.

Nobody here wrote that client, and its DTLS certificate is RSA: before omni_rtc/dtls.py
the handshake failed with "no shared cipher". Two Debian 12 workarounds
(../shared/TESTING.md): a no-op libgupnp-igd built from tests/tools/gupnp_igd_stub.c
(libnice would pull libsoup3 next to whip-client's libsoup2), and a veth pair inside the
test's own network namespace (libnice skips ``lo``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from omni_rtc.emulator.replies import resample_pcm16
from omni_rtc.ice import restrict_host_addresses
from signaling.whip import WHIP
from tests.conftest import run_bridge
from tests.coturn import run_coturn
from tests.helpers import assert_at_most_fps, wait_for
from tests.media import best_circular_correlation, envelope, load_pcm48
from tests.netns import require_loopback_namespace

pytestmark = pytest.mark.netns

STUB = Path(__file__).resolve().parents[1] / "tools" / "gupnp_igd_stub.c"
SERVER_IP, CLIENT_IP = "10.77.0.1", "10.77.0.2"
LINKS = ("whip0", "whip1")  # libnice ignores interfaces named veth*


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def veth() -> Iterator[None]:
    """A veth pair in this test's (loopback-only) namespace; aiortc gathers on its address."""
    require_loopback_namespace()  # never touch the host's interfaces
    ip("link", "add", LINKS[0], "type", "veth", "peer", "name", LINKS[1])
    try:
        ip("addr", "add", f"{SERVER_IP}/24", "dev", LINKS[0])
        ip("addr", "add", f"{CLIENT_IP}/24", "dev", LINKS[1])
        ip("link", "set", LINKS[0], "up")
        ip("link", "set", LINKS[1], "up")
        restrict_host_addresses([SERVER_IP])
        yield
    finally:
        restrict_host_addresses(["127.0.0.1"])
        ip("link", "del", LINKS[0])  # takes its peer with it: the namespace is lo-only again


@pytest.fixture
def whip_client_env(tmp_path: Path) -> dict[str, str]:
    for tool in ("whip-client", "gcc"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: tests/run installs simple-whip-client and gcc")
    lib = tmp_path / "lib"
    lib.mkdir()
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-Wl,-soname,libgupnp-igd-1.0.so.4",
            "-o",
            str(lib / "libgupnp-igd-1.0.so.4"),
            str(STUB),
        ],
        check=True,
    )
    return {
        **os.environ,
        "LD_LIBRARY_PATH": str(lib),
        "GST_REGISTRY": str(tmp_path / "gst-registry.bin"),
    }


VIDEO = (
    "videotestsrc is-live=true ! video/x-raw,width=640,height=480,framerate=15/1 ! "
    "videoconvert ! queue ! vp8enc deadline=1 ! rtpvp8pay pt=96 ssrc=2 ! queue ! "
    "application/x-rtp,media=video,encoding-name=VP8,payload=96"
)


def speech_pipeline(wav: Path, directory: Path) -> str:
    """The speech played two times in a row (whip-client plays a file once), as Opus."""
    twice = directory / "speech-twice.wav"
    subprocess.run(["sox", str(wav), str(twice), "repeat", "1"], check=True)
    return (
        f"filesrc location={twice} ! wavparse ! audioconvert ! audioresample ! "
        "audio/x-raw,rate=48000,channels=1 ! identity sync=true ! queue ! opusenc ! "
        "rtpopuspay pt=100 ssrc=1 ! queue ! "
        "application/x-rtp,media=audio,encoding-name=OPUS,payload=100"
    )


@contextlib.asynccontextmanager
async def whip_client(
    env: dict[str, str], log_path: Path, *args: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``whip-client -o ARGS`` with its output in ``log_path``; killed if still running."""
    with log_path.open("wb") as log:
        client = await asyncio.create_subprocess_exec(
            "whip-client", "-o", *args, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield client
        finally:
            if client.returncode is None:
                client.kill()
                await client.wait()


async def test_simple_whip_client_publishes_speech_and_video(
    veth, whip_client_env, speech_wav: Path, tmp_path: Path, artifacts: Path
) -> None:
    speech = load_pcm48(speech_wav)
    loop_s = len(speech) / 2 / 48_000
    audio = speech_pipeline(speech_wav, tmp_path)
    log_path = tmp_path / "whip-client.log"
    async with run_bridge(["--ice-host-address", SERVER_IP]) as bridge:
        args = ("-u", f"{bridge.url}/whip?voice=Ethan", "-A", audio, "-V", VIDEO)
        async with whip_client(whip_client_env, log_path, *args) as client:
            await wait_for(lambda: bridge.manager.active == 1, timeout=30)
            call = bridge.manager.list()[0]
            await wait_for(lambda: call.pc.connectionState == "connected", timeout=15)
            session = bridge.app[WHIP].sessions[call.id]
            await wait_for(lambda: session.end_of_candidates, timeout=10)
            record = bridge.emulator.sessions[0]
            await wait_for(lambda: record.audio_seconds_total > loop_s * 1.6, timeout=20)
            await wait_for(
                lambda: record.responses >= 1 and call.conversation.state == "listening", 10
            )
            dtls = call.pc.getTransceivers()[0].receiver.transport
            cipher = dtls._ssl.get_cipher_name()
            peer_key = dtls._ssl.get_peer_certificate().to_cryptography().public_key()
            transport = dtls.transport
            trickled = [(c.ip, c.type, c.protocol) for c in transport.getRemoteCandidates()]
            trickle = (session.patches, session.candidates)
            voice = call.conversation.session.voice
            # Ctrl-C: whip-client sends DELETE to its resource, then exits
            client.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(client.wait(), 15) == 0
            await wait_for(lambda: bridge.manager.active == 0, timeout=5)
            await asyncio.wait_for(record.closed.wait(), 5)
        output = log_path.read_text(errors="replace")

    assert "DTLS connected" in output, output[-3000:]
    assert isinstance(peer_key, rsa.RSAPublicKey)  # the interop defect this guards
    assert cipher.startswith("ECDHE-RSA-"), cipher
    assert voice == "Ethan"
    # trickle: whip-client PATCHes its candidates (the offer has none) and end-of-candidates
    assert trickle[0] >= 1
    assert trickle[1] >= 1
    assert (CLIENT_IP, "host", "udp") in trickled
    # SIGINT -> DELETE -> the call ended as a hang-up, and the client saw 200
    assert call.ended_reason == "hangup"
    assert session.id not in bridge.app[WHIP].sessions
    assert "Disconnecting from server" in output
    assert "[WARN]" not in output.split("Disconnecting from server", 1)[1]
    # the model got the speech as 16 kHz pcm16, recognisably the same signal
    reference = envelope(resample_pcm16(speech, 48_000, 16_000), 16_000)
    received = envelope(bytes(record.audio), 16_000)
    r = best_circular_correlation(reference, received)
    control = best_circular_correlation(reference[::-1], received)
    # the test pattern arrived as JPEGs at <= 2 fps
    images = record.images
    gaps = np.diff([i.at for i in images])
    figures = {
        "envelope_r": round(r, 3),
        "reversed_control_r": round(control, 3),
        "audio_s": round(record.audio_seconds_total, 2),
        "images": len(images),
        "min_image_gap_s": round(float(gaps.min()), 3) if len(gaps) else None,
        "dtls_cipher": cipher,
        "patches": trickle[0],
        "trickled_candidates": trickle[1],
    }
    with contextlib.suppress(OSError):
        (artifacts / "whip-client-figures.json").write_text(json.dumps(figures, indent=2))
    assert r >= 0.8, figures
    assert control < r - 0.2, figures
    assert len(images) >= 4, figures
    assert all(i.accepted for i in images), [i.error for i in images]
    assert (images[0].width, images[0].height) == (640, 480)
    assert_at_most_fps([i.at for i in images], 2.0)


async def test_simple_whip_client_follows_link_headers_through_turn(
    veth, whip_client_env, speech_wav: Path, tmp_path: Path
) -> None:
    """``-f`` reads our Link headers (minted TURN credentials), ``-F`` allows relay only."""
    log_path = tmp_path / "whip-client.log"
    with run_coturn(ip=SERVER_IP) as turn:
        argv = ["--ice-server", turn.url, "--turn-secret", turn.secret]
        async with run_bridge(argv) as bridge:
            audio = speech_pipeline(speech_wav, tmp_path)
            args = ("-u", f"{bridge.url}/whip", "-f", "-F", "-A", audio)
            async with whip_client(whip_client_env, log_path, *args) as client:
                await wait_for(lambda: bridge.manager.active == 1, timeout=30)
                call = bridge.manager.list()[0]
                await wait_for(lambda: call.pc.connectionState == "connected", timeout=20)
                record = bridge.emulator.sessions[0]
                await wait_for(lambda: record.audio_seconds_total > 2.0, timeout=15)
                connection = call.pc.getTransceivers()[0].receiver.transport.transport
                pair = next(iter(connection._connection._nominated.values()))
                client.send_signal(signal.SIGINT)
                assert await asyncio.wait_for(client.wait(), 15) == 0
                await wait_for(lambda: bridge.manager.active == 0, timeout=5)
    output = log_path.read_text(errors="replace")
    assert "-- -- turn://" in output, output[:3000]  # whip-client's own log of the Link
    assert "%3Aomni-rtc-whip:" in output
    # the client may only use its relay candidate: the bridge talks to coturn's relay port
    assert pair.remote_candidate.host == SERVER_IP
    assert 50000 <= pair.remote_candidate.port <= 50100
    assert call.ended_reason == "hangup"
