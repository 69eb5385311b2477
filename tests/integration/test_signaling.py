"""The HTTP edge: every bad input gets a clear JSON error; the API key never leaks."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from omni_rtc.emulator import EmulatorConfig
from tests.conftest import run_bridge
from tests.helpers import busy_loop, sine_pcm, wait_for
from tests.peer import LoopingPcmTrack, OfferRejected, TestPeer

KEY = "sk-very-secret-key-0123456789"


async def offer_sdp(audio: bool = True, audio_direction: str | None = None) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if audio:
        pc.addTransceiver("audio", direction=audio_direction or "sendrecv")
    else:
        pc.addTransceiver("video")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def post(
    url: str,
    body: object = None,
    *,
    raw: bytes | None = None,
    content_type: str = "application/json",
):
    async with aiohttp.ClientSession() as http:
        data = raw if raw is not None else None
        kwargs = (
            {"data": data, "headers": {"Content-Type": content_type}}
            if raw is not None
            else {"json": body}
        )
        async with http.post(url + "/offer", **kwargs) as response:
            text = await response.text()
            assert response.headers["Content-Type"].startswith("application/json"), text
            return response.status, json.loads(text)["error"], dict(response.headers)


async def test_pages_config_and_health() -> None:
    async with (
        run_bridge(["--voice", "Ethan", "--instructions", "Be brief."]) as bridge,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(bridge.url + "/") as r:
            assert r.status == 200
            assert "Content-Security-Policy" in r.headers
            assert '<button id="call"' in await r.text()
        async with http.get(bridge.url + "/static/app.js") as r:
            assert r.status == 200
            assert 'createDataChannel("events")' in await r.text()
        async with http.get(bridge.url + "/config") as r:
            config = await r.json()
        async with http.get(bridge.url + "/healthz") as r:
            assert r.status == 200
            assert (await r.json()) == {"status": "ok", "calls": 0, "max_calls": 6}
        async with http.get(bridge.url + "/offer") as r:
            assert r.status == 405
            assert "error" in await r.json()
        async with http.get(bridge.url + "/nope") as r:
            assert r.status == 404
            assert (await r.json()) == {"error": "Not Found"}
    assert config["voices"] == ["Chelsie", "Serena", "Ethan", "Cherry"]
    assert config["default_voice"] == "Ethan"
    assert config["instructions"] == "Be brief."
    assert config["modes"] == ["server_vad", "manual"]
    assert config["ice_servers"] == []  # never Google's STUN by default
    assert config["video"]["fps"] == 2.0


@pytest.mark.parametrize(
    ("body", "raw", "content_type", "status", "message"),
    [
        (None, b"{not json", "application/json", 400, "body is not valid JSON"),
        (None, b"sdp=1", "application/x-www-form-urlencoded", 415, "application/json"),
        ([1, 2], None, "application/json", 400, "JSON object"),
        (
            {"sdp": "v=0", "type": "answer"},
            None,
            "application/json",
            400,
            "'type' must be \"offer\"",
        ),
        ({"type": "offer"}, None, "application/json", 400, "'sdp' must be a non-empty string"),
        (
            {"type": "offer", "sdp": 42},
            None,
            "application/json",
            400,
            "'sdp' must be a non-empty string",
        ),
        ({"type": "offer", "sdp": "hello"}, None, "application/json", 400, "must start with v=0"),
        (
            {"type": "offer", "sdp": "v=0\r\nm=audio x\r\n"},
            None,
            "application/json",
            400,
            "could not be parsed",
        ),
    ],
)
async def test_malformed_offers(body, raw, content_type, status, message) -> None:
    async with run_bridge() as bridge:
        got, text, _ = await post(bridge.url, body, raw=raw, content_type=content_type)
    assert got == status
    assert message in text
    assert "Traceback" not in text


async def test_offers_without_usable_audio() -> None:
    async with run_bridge() as bridge:
        status, text, _ = await post(
            bridge.url, {"type": "offer", "sdp": await offer_sdp(audio=False)}
        )
        assert status == 400
        assert text == "the offer has no audio: a call needs the microphone"
        status, text, _ = await post(
            bridge.url, {"type": "offer", "sdp": await offer_sdp(audio_direction="recvonly")}
        )
        assert status == 400
        assert "receive-only" in text
        assert not bridge.emulator.sessions  # refused before any upstream session opened


async def test_oversized_body_is_413_json() -> None:
    async with run_bridge(["--max-body-bytes", "20000"]) as bridge:
        status, text, headers = await post(
            bridge.url, {"type": "offer", "sdp": "v=0" + "x" * 30_000}
        )
    assert status == 413
    assert headers["Content-Type"].startswith("application/json")
    assert "too large" in text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"voice": "Nobody"},
            "unknown voice 'Nobody' for model qwen-omni-turbo-realtime; choose one of: Chelsie",
        ),
        ({"voice": 5}, "'voice' must be a string"),
        ({"mode": "walkie-talkie"}, "'mode' must be one of: server_vad, manual"),
        ({"instructions": "x" * 5000}, "'instructions' is too long"),
    ],
)
async def test_bad_per_call_options(options, message) -> None:
    async with run_bridge() as bridge:
        status, text, _ = await post(
            bridge.url, {"type": "offer", "sdp": await offer_sdp(), **options}
        )
        assert bridge.manager.active == 0
    assert status == 400
    assert message in text


async def test_too_many_calls_is_503_with_retry_after() -> None:
    async with run_bridge(["--max-calls", "1"]) as bridge:
        first = TestPeer(bridge.url, LoopingPcmTrack(sine_pcm(1.0, 48_000)))
        second = TestPeer(bridge.url, LoopingPcmTrack(sine_pcm(1.0, 48_000)))
        try:
            await first.call()
            with pytest.raises(OfferRejected) as info:
                await second.call()
            async with aiohttp.ClientSession() as http, http.get(bridge.url + "/healthz") as r:
                health = (r.status, await r.json())
        finally:
            await first.close()
            await second.close()
    assert info.value.status == 503
    assert info.value.headers["Retry-After"] == "15"
    assert info.value.headers["X-Omni-Rtc-Refused"] == "full"
    assert "limit of 1 calls" in info.value.body["error"]
    assert health == (503, {"status": "full", "calls": 1, "max_calls": 1})


async def test_an_overloaded_event_loop_refuses_new_calls_until_it_catches_up() -> None:
    async with run_bridge(["--max-loop-busy", "60"]) as bridge:
        load = bridge.manager.load
        assert load is not None
        with busy_loop():
            await wait_for(lambda: load.overloaded, 10)
        # right away (the verdict holds until the loop is well on time for a second)
        status, text, headers = await post(bridge.url, {"type": "offer", "sdp": await offer_sdp()})
        async with aiohttp.ClientSession() as http, http.get(bridge.url + "/healthz") as r:
            health = (r.status, await r.json())
        metrics = bridge.metrics.render().decode()
        await wait_for(lambda: not load.overloaded, 25)  # (10 s at least if it went lean)
        peer = TestPeer(bridge.url, LoopingPcmTrack(sine_pcm(1.0, 48_000)))
        try:
            await peer.call()  # taken again
            assert bridge.manager.active == 1
        finally:
            await peer.close()
    assert status == 503
    assert headers["Retry-After"] == "15"
    assert headers["X-Omni-Rtc-Refused"] == "overloaded"
    assert "overloaded (its event loop is" in text
    assert health == (503, {"status": "overloaded", "calls": 0, "max_calls": 6})
    assert 'omni_rtc_calls_failed_total{reason="overloaded",transport="webrtc"} 1.0' in metrics
    assert "omni_rtc_overloaded 1.0" in metrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_upstream_unreachable_is_502_naming_the_failure_not_the_url(caplog) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/api-ws/v1/realtime"
    async with run_bridge(["--api-key", KEY, "--connect-timeout", "2"], upstream_url=url) as bridge:
        status, text, _ = await post(bridge.url, {"type": "offer", "sdp": await offer_sdp()})
        metrics = bridge.metrics.render().decode()
    assert status == 502
    assert text == "the realtime service is unreachable"
    assert str(port) not in text  # the internal URL and the OS error go to the log only
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"ws://127.0.0.1:{port}" in w and "refused" in w.lower() for w in warnings)
    assert KEY not in text
    assert (
        'omni_rtc_calls_failed_total{reason="upstream_unavailable",transport="webrtc"} 1.0'
        in metrics
    )


async def test_rejected_key_is_502_and_never_echoed() -> None:
    emulator = EmulatorConfig(api_key="sk-the-right-key-000")
    async with run_bridge(["--api-key", KEY], emulator=emulator) as bridge:
        status, text, _ = await post(bridge.url, {"type": "offer", "sdp": await offer_sdp()})
        async with aiohttp.ClientSession() as http:
            pages = []
            for path in ("/", "/config", "/healthz", "/metrics", "/static/app.js"):
                async with http.get(bridge.url + path) as r:
                    pages.append(await r.text())
    assert status == 502
    assert "rejected the server's API key" in text
    assert KEY not in text
    assert all(KEY not in page for page in pages)


async def test_delete_calls() -> None:
    async with run_bridge() as bridge:
        peer = TestPeer(bridge.url, LoopingPcmTrack(sine_pcm(1.0, 48_000)))
        try:
            await peer.call()
            await peer.wait_connected()
            assert await peer.hangup() == 204
            assert bridge.manager.active == 0
            assert await peer.hangup() == 404
        finally:
            await peer.close()
        await asyncio.sleep(0)


async def test_offer_aiortc_cannot_apply_is_400_opens_no_upstream_and_leaves_nothing() -> None:
    sdp = "".join(
        line
        for line in (await offer_sdp()).splitlines(keepends=True)
        if not line.startswith("a=ice-")
    )
    before = {t for t in asyncio.all_tasks()}
    async with run_bridge() as bridge:
        status, text, _ = await post(bridge.url, {"type": "offer", "sdp": sdp})
        await asyncio.sleep(0.1)
        assert not bridge.emulator.sessions  # the offer is applied before any paid session
        leftover = [t for t in asyncio.all_tasks() - before if "call-" in t.get_name()]
        metrics = bridge.metrics.render().decode()
    assert status == 400
    assert text.startswith("cannot answer this offer")
    assert not leftover
    assert 'omni_rtc_calls_active{transport="webrtc"} 0.0' in metrics
    assert 'omni_rtc_calls_failed_total{reason="bad_offer",transport="webrtc"} 1.0' in metrics
