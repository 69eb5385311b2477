"""The public API as a host program uses it: mount under a prefix, bring a peer connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection

from omni_rtc import Bridge, Settings
from omni_rtc.emulator import Emulator, EmulatorConfig
from tests.helpers import sine_pcm, utterance, wait_for
from tests.peer import LoopingPcmTrack, TestPeer


async def host_page(request: web.Request) -> web.Response:
    return web.Response(text="the host's own page")


@contextlib.asynccontextmanager
async def host_app(page: bool = True) -> AsyncIterator[tuple[str, Bridge, Emulator]]:
    async with Emulator(EmulatorConfig(reply_delay_s=0.05)) as emu:
        bridge = Bridge(upstream_url=emu.url, ice_host_addresses=("127.0.0.1",))
        app = web.Application()
        app.router.add_get("/", host_page)
        bridge.mount(app, "/voice/", page=page)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            yield f"http://127.0.0.1:{runner.addresses[0][1]}", bridge, emu
        finally:
            await runner.cleanup()


async def test_mounted_under_a_prefix_with_the_page() -> None:
    async with host_app() as (base, bridge, emu), aiohttp.ClientSession() as http:
        async with http.get(base + "/") as r:
            assert await r.text() == "the host's own page"
        async with http.get(base + "/voice", allow_redirects=False) as r:
            assert r.status == 308
            assert r.headers["Location"] == "/voice/"
        async with http.get(base + "/voice/") as r:
            html = await r.text()
            assert r.status == 200
            assert 'src="static/app.js"' in html  # relative: works under any prefix
        async with http.get(base + "/voice/static/app.js") as r:
            assert r.status == 200
            assert 'fetch("offer"' in await r.text()
        async with http.get(base + "/voice/healthz") as r:
            assert (await r.json())["status"] == "ok"
        peer = TestPeer(base + "/voice", LoopingPcmTrack(sine_pcm(1.0, 48_000)))
        try:
            await peer.call()
            await peer.wait_connected()
            await peer.wait_message(lambda m: m.get("type") == "call")
            assert bridge.calls.active == 1
            async with http.get(base + "/voice/metrics") as r:
                assert 'omni_rtc_calls_active{transport="webrtc"} 1.0' in await r.text()
            assert await peer.hangup() == 204
        finally:
            await peer.close()
        assert bridge.calls.active == 0
        assert len(emu.sessions) == 1


async def test_mounted_without_the_page_and_closed_with_the_host_app() -> None:
    async with host_app(page=False) as (base, bridge, emu):
        async with aiohttp.ClientSession() as http, http.get(base + "/voice/") as r:
            assert r.status == 404
        peer = TestPeer(base + "/voice", LoopingPcmTrack(sine_pcm(1.0, 48_000)))
        await peer.call()
        await peer.wait_connected()
        call = bridge.calls.list()[0]
    # the host app's shutdown ended the call and the upstream session
    await asyncio.wait_for(call.closed.wait(), 5)
    assert call.ended_reason == "server_shutdown"
    await asyncio.wait_for(emu.sessions[0].closed.wait(), 2)
    await peer.close()


def test_settings_or_keywords_not_both() -> None:
    assert Bridge(max_calls=3).settings.max_calls == 3
    assert Bridge(Settings(max_calls=2)).settings.max_calls == 2
    with pytest.raises(TypeError):
        Bridge(Settings(), max_calls=3)
    with pytest.raises(ValueError, match="--video-fps"):
        Bridge(video_fps=7)
    with pytest.raises(ValueError, match="prefix"):
        Bridge().mount(web.Application(), "/")


@pytest.mark.parametrize("attach_when", ["before_remote_description", "after_remote_description"])
async def test_bring_your_own_peer_connection(attach_when: str) -> None:
    async with (
        Emulator(EmulatorConfig(reply_delay_s=0.05)) as emu,
        Bridge(upstream_url=emu.url) as bridge,
    ):
        caller = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        caller.addTrack(LoopingPcmTrack(utterance(48_000)))
        levels: list[float] = []
        heard: list[asyncio.Task[None]] = []

        async def listen(track) -> None:  # type: ignore[no-untyped-def]
            import numpy as np

            while True:
                frame = await track.recv()
                levels.append(float(np.abs(frame.to_ndarray()).max()))

        caller.on("track", lambda t: heard.append(asyncio.create_task(listen(t))))
        gateway = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        await caller.setLocalDescription(await caller.createOffer())
        if attach_when == "before_remote_description":
            call = await bridge.attach_peer_connection(gateway)
            await gateway.setRemoteDescription(caller.localDescription)
        else:
            await gateway.setRemoteDescription(caller.localDescription)
            call = await bridge.attach_peer_connection(gateway)
        await gateway.setLocalDescription(await gateway.createAnswer())
        assert "a=sendrecv" in gateway.localDescription.sdp
        await caller.setRemoteDescription(gateway.localDescription)
        events = call.conversation.events()  # subscribed late: the start is replayed
        first = await anext(events)
        second = await anext(events)
        await wait_for(lambda: call.conversation.state == "speaking", 15)
        await wait_for(lambda: sum(1 for v in levels if v > 3000) > 10, 5)
        await call.close()
        assert gateway.connectionState == "closed"
        await caller.close()
        for task in heard:
            task.cancel()
        record = emu.sessions[0]
    assert record.audio_seconds_total > 1.0
    assert call.ended_reason == "hangup"
    assert first.to_message()["type"] == "call"
    assert second.to_message() == {"type": "state", "value": "listening"}
