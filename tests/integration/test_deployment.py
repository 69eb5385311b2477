"""Deployment: compose file, env vars, health check, metrics, calls relayed through coturn."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiortc import RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from omni_rtc.config import ENV_VARS
from omni_rtc.emulator import EmulatorConfig
from tests.conftest import run_bridge
from tests.coturn import run_coturn
from tests.media import load_pcm48
from tests.netns import require_loopback_namespace
from tests.peer import LoopingPcmTrack, TestPeer

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-metrics-test-key-9876543210"


def compose_config() -> dict:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose (Debian package) is missing: tests/run installs it")
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_file_is_valid_and_bridge_env_vars_are_known_to_the_cli() -> None:
    config = compose_config()
    assert set(config["services"]) == {"bridge", "coturn", "caddy"}
    bridge_env = set(config["services"]["bridge"]["environment"])
    unknown = bridge_env - ENV_VARS
    assert not unknown, f"compose passes env vars the CLI does not know: {unknown}"
    assert config["services"]["bridge"]["environment"]["OMNI_RTC_ICE_TRANSPORT_POLICY"] == "relay"
    # WebRTC media goes through coturn only; the bridge publishes SIP and its RTP range,
    # 1:1 (the ports written in SDP are the published ones), never HTTP (Caddy fronts it)
    ports = config["services"]["bridge"]["ports"]
    published = {(p["target"], p["protocol"]) for p in ports}
    assert {(5060, "udp"), (5060, "tcp"), (40000, "udp"), (40199, "udp")} <= published
    assert all(p["published"] == p["target"] for p in ports)
    assert all(p["target"] == 5060 or 40000 <= p["target"] <= 40199 for p in ports)
    bridge_env = config["services"]["bridge"]["environment"]
    assert bridge_env["OMNI_RTC_RTP_PORTS"] == "40000-40199"


def test_compose_bridge_needs_the_access_token_and_trusts_only_its_proxy_network() -> None:
    from omni_rtc.config import Settings

    env = {k: str(v) for k, v in compose_config()["services"]["bridge"]["environment"].items()}
    env["OMNI_RTC_TURN_SECRET"] = "0123456789abcdef0123"
    with pytest.raises(ValueError, match=r"refusing to listen on 0\.0\.0\.0 without an access"):
        Settings.from_argv([], environ=env)
    settings = Settings.from_argv([], environ={**env, "OMNI_RTC_ACCESS_TOKEN": "a" * 32})
    assert settings.auth_required
    assert settings.call_rate == (20, 60.0)
    assert settings.trusted_proxies == ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


def test_env_example_documents_every_variable_of_the_compose_file() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", compose))
    documented = set(re.findall(r"^([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert used <= documented, used - documented
    assert documented <= used, documented - used


def test_dockerfile_runs_as_non_root_with_a_health_check() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER omni$", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile
    assert '"omni-rtc", "healthcheck"' in dockerfile
    assert 'ENTRYPOINT ["omni-rtc"]' in dockerfile
    for var in re.findall(r"(OMNI_RTC_[A-Z_]+)=", dockerfile):
        assert var in ENV_VARS


async def healthcheck(url: str) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "omni_rtc",
        "healthcheck",
        "--url",
        url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await process.wait()


async def test_healthcheck_command_follows_healthz(speech_wav) -> None:
    async with run_bridge(["--max-calls", "1"]) as bridge:
        assert await healthcheck(bridge.url + "/healthz") == 0
        peer = TestPeer(bridge.url, LoopingPcmTrack(load_pcm48(speech_wav)))
        try:
            await peer.call()
            assert await healthcheck(bridge.url + "/healthz") == 1  # full: cannot take calls
        finally:
            await peer.close()
        await asyncio.sleep(0.2)
        assert await healthcheck(bridge.url + "/healthz") == 0
    assert await healthcheck(bridge.url + "/healthz") == 1  # gone


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    assert match, f"{name} not in metrics"
    return float(match[1])


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return await r.text()


async def test_metrics_during_and_after_a_call(speech_wav) -> None:
    from tests.peer import PatternVideoTrack

    async with run_bridge(
        ["--api-key", KEY], emulator=EmulatorConfig(api_key=KEY, reply_delay_s=0.05)
    ) as bridge:
        peer = TestPeer(bridge.url, LoopingPcmTrack(load_pcm48(speech_wav)), PatternVideoTrack())
        try:
            await peer.call()
            await peer.wait_connected()
            await peer.wait_message(
                lambda m: m.get("type") == "transcript" and m["role"] == "assistant" and m["final"],
                timeout=20,
            )
            during = await scrape(bridge.url)
        finally:
            await peer.close()
        await asyncio.sleep(0.3)
        after = await scrape(bridge.url)
    assert metric(during, 'omni_rtc_calls_active{transport="webrtc"}') == 1
    assert metric(after, 'omni_rtc_calls_active{transport="webrtc"}') == 0
    assert metric(after, 'omni_rtc_calls_total{transport="webrtc"}') == 1
    assert metric(after, 'omni_rtc_calls_ended_total{reason="peer_closed",transport="webrtc"}') == 1
    assert metric(during, "omni_rtc_upstream_connect_seconds_count") == 1
    assert metric(during, "omni_rtc_reply_latency_seconds_count") >= 1
    assert 0 < metric(during, "omni_rtc_reply_latency_seconds_sum") < 5
    assert metric(during, "omni_rtc_images_sent_total") >= 1
    assert metric(during, 'omni_rtc_media_bytes_total{direction="up"}') > 16_000
    assert metric(during, 'omni_rtc_media_bytes_total{direction="down"}') > 24_000
    assert "omni_rtc_barge_ins_total" in after
    assert "omni_rtc_reply_underruns_total" in after
    assert "omni_rtc_reply_caught_up_seconds_total" in after
    assert KEY not in during
    assert KEY not in after


def nominated_pair(pc):  # type: ignore[no-untyped-def]
    """The ICE candidate pair aioice selected for this peer connection."""
    connection = pc.getTransceivers()[0].sender.transport.transport.iceGatherer._connection
    return next(iter(connection._nominated.values()))


async def test_call_through_coturn_relay_both_ways(speech_wav) -> None:
    require_loopback_namespace()
    with run_coturn() as turn:
        argv = [
            "--ice-server",
            turn.url,
            "--turn-secret",
            turn.secret,
            "--ice-transport-policy",
            "relay",
        ]
        async with run_bridge(argv) as bridge:
            async with aiohttp.ClientSession() as http, http.get(bridge.url + "/config") as r:
                ice = (await r.json())["ice_servers"][0]
            assert ice["urls"] == turn.url
            assert ice["username"].endswith(":omni-rtc-browser")
            # the caller may only use relay candidates, like a browser forced to "relay"
            relay_only = RTCConfiguration(
                iceServers=[
                    RTCIceServer(
                        urls=ice["urls"], username=ice["username"], credential=ice["credential"]
                    )
                ],
                iceTransportPolicy=RTCIceTransportPolicy.RELAY,
            )
            peer = TestPeer(
                bridge.url, LoopingPcmTrack(load_pcm48(speech_wav)), configuration=relay_only
            )
            try:
                await peer.call()
                await peer.wait_connected(15)
                await peer.wait_message(
                    lambda m: (
                        m.get("type") == "transcript" and m["role"] == "assistant" and m["final"]
                    ),
                    timeout=25,
                )
                await asyncio.sleep(1.0)
                caller_pair = nominated_pair(peer.pc)
                bridge_pair = nominated_pair(bridge.manager.list()[0].pc)
            finally:
                await peer.close()
            record = bridge.emulator.sessions[0]
    assert caller_pair.local_candidate.type == "relay"
    assert bridge_pair.local_candidate.type == "relay"
    assert len(record.audio) / 2 / 16_000 > 2.0  # caller -> model through TURN
    assert sum(1 for _, db in peer.levels if db > -50) > 25  # model -> caller through TURN
