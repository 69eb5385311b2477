"""``omni-rtc serve --workers 2``: calls spread over worker processes behind one front."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import AsyncIterator

import aiohttp

from tests.helpers import sine_pcm
from tests.integration.test_cli_servers import free_port, read_until, start, stop
from tests.peer import LoopingPcmTrack, TestPeer


@contextlib.asynccontextmanager
async def front(*args: str) -> AsyncIterator[str]:
    port = free_port()
    process = await start(
        "serve", "--port", str(port), "--ice-host-address", "127.0.0.1", "--workers", "2", *args
    )
    try:
        banner = await read_until(process, "ICE servers", timeout=60)
        assert "workers: 2 processes" in banner
        yield f"http://127.0.0.1:{port}"
    finally:
        assert await stop(process) == 0


async def health(url: str) -> dict:
    async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as r:
        return await r.json()


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, name
    return float(match[1])


def hearing(peer: TestPeer, since: float) -> int:
    """20 ms reply frames the peer received after ``since`` (any level)."""
    return sum(1 for t, _ in peer.levels if t >= since)


async def test_calls_spread_over_workers_and_later_requests_find_them() -> None:
    async with front() as url:
        peers = [TestPeer(url, LoopingPcmTrack(sine_pcm(1.0, 48_000))) for _ in range(4)]
        try:
            for peer in peers:
                await peer.call()
                await peer.wait_connected()
            await asyncio.sleep(1.0)  # one health poll
            state = await health(url)
            owners = sorted(p.call_id.split(".")[0] for p in peers)  # type: ignore[union-attr]
            async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as r:
                during = await r.text()
            statuses = [await p.hangup() for p in peers]
            again = await peers[0].hangup()
        finally:
            for peer in peers:
                await peer.close()
        await asyncio.sleep(1.0)
        after = await health(url)
    assert owners == ["0", "0", "1", "1"]  # least loaded first: two each
    assert [w["calls"] for w in state["workers"]] == [2, 2]
    assert (state["calls"], state["max_calls"]) == (4, 12)
    assert metric(during, 'omni_rtc_calls_total{transport="webrtc"}') == 4
    assert metric(during, 'omni_rtc_calls_active{transport="webrtc"}') == 4
    assert statuses == [204] * 4
    assert again == 404
    assert after["calls"] == 0


async def test_a_crashed_worker_ends_only_its_calls_and_comes_back() -> None:
    async with front() as url:
        first = TestPeer(url, LoopingPcmTrack(sine_pcm(1.0, 48_000)))
        second = TestPeer(url, LoopingPcmTrack(sine_pcm(1.0, 48_000)))
        try:
            for peer in (first, second):
                await peer.call()
                await peer.wait_connected()
            await asyncio.sleep(1.0)
            state = await health(url)
            victim = next(w for w in state["workers"] if w["index"] == 1)
            os.kill(victim["pid"], signal.SIGKILL)
            killed_at = asyncio.get_running_loop().time()
            mark = time.monotonic()
            await asyncio.sleep(3.0)
            survivor_frames = hearing(first, mark)
            victim_frames = hearing(second, mark + 0.5)
            for _ in range(100):  # restarted: a new pid, ready again
                state = await health(url)
                worker = state["workers"][1]
                if worker["ready"] and worker["pid"] != victim["pid"]:
                    break
                await asyncio.sleep(0.2)
            restarted_after = asyncio.get_running_loop().time() - killed_at
            third = TestPeer(url, LoopingPcmTrack(sine_pcm(1.0, 48_000)))
            try:
                await third.call()
                await third.wait_connected()
            finally:
                await third.close()
            async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as r:
                text = await r.text()
        finally:
            await first.close()
            await second.close()
    assert str(first.call_id).startswith("0.")
    assert str(second.call_id).startswith("1.")
    assert survivor_frames > 100  # 3 s of reply audio: the other worker's call went on
    assert victim_frames < 10  # the killed worker's call is gone
    assert state["workers"][1]["ready"]
    assert restarted_after < 15, restarted_after
    assert metric(text, "omni_rtc_worker_restarts") == 1


async def test_whip_through_the_front() -> None:
    from tests.integration.test_whip import SDP, offer_sdp, request

    async with front() as url:
        sdp = await offer_sdp()
        created = await request("POST", url + "/whip?voice=Ethan", sdp, {"Content-Type": SDP})
        location = created.headers["Location"]
        options = await request("OPTIONS", url + "/whip")
        deleted = await request("DELETE", url + location)
        again = await request("DELETE", url + location)
        refused = await request("POST", url + "/whip", "v=0", {"Content-Type": "text/plain"})
    assert created.status == 201
    assert re.fullmatch(r"/whip/[01]\.[\w-]+", location)
    assert created.headers["Content-Type"] == "application/sdp"
    assert options.status == 204
    assert options.headers["Accept-Post"] == "application/sdp"
    assert deleted.status == 200
    assert again.status == 404
    assert refused.status == 415
    assert refused.headers["Content-Type"].startswith("text/plain")


async def test_drain_reaches_every_worker_and_health_says_so() -> None:
    port = free_port()
    process = await start(
        "serve",
        *("--port", str(port), "--ice-host-address", "127.0.0.1", "--workers", "2"),
        *("--drain-seconds", "2"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await read_until(process, "ICE servers", timeout=60)
        peers = [TestPeer(url, LoopingPcmTrack(sine_pcm(1.0, 48_000))) for _ in range(2)]
        try:
            for peer in peers:
                await peer.call()
                await peer.wait_connected()
            process.send_signal(signal.SIGTERM)
            for peer in peers:
                await peer.wait_message(lambda m: m.get("type") == "notice")
            draining = await health(url)
            ended = [
                (await p.wait_message(lambda m: m.get("type") == "ended", 10))[1] for p in peers
            ]
        finally:
            for peer in peers:
                await peer.close()
        code = await asyncio.wait_for(process.wait(), 15)
    finally:
        await stop(process)
    assert draining["status"] == "draining"
    assert [e["reason"] for e in ended] == ["server_shutdown"] * 2
    assert code == 0


async def test_sip_calls_spread_over_workers_with_one_sip_address(tmp_path, speech_wav) -> None:
    """The front answers SIP; each call's RTP and conversation live in a worker."""
    from tests.baresip import call_with_baresip
    from tests.integration.test_sip_bridge import say_once
    from tests.sip_support import CLIENT_IP, SERVER_IP, SIP_PORT, ensure_veth, remove_veth

    created = ensure_veth()
    try:
        sip = ("--sip-listen", f"udp:{SERVER_IP}:{SIP_PORT}", "--sip-allow", f"{CLIENT_IP}/32")
        async with front(*sip, "--rtp-ports", "41000-41199") as url:
            microphone = say_once(speech_wav, 8000, 1, tmp_path)
            (tmp_path / "a").mkdir()
            (tmp_path / "b").mkdir()
            calls = asyncio.gather(
                call_with_baresip(tmp_path / "a", microphone, "PCMU", seconds=9),
                call_with_baresip(
                    tmp_path / "b",
                    microphone,
                    "PCMA",
                    seconds=9,
                    aor=f"sip:other@{CLIENT_IP}:5080",
                    listen_port=5080,
                ),
            )
            seen: list[list[int]] = []
            while not calls.done():
                seen.append([w["calls"] for w in (await health(url))["workers"]])
                await asyncio.sleep(0.5)
            first, second = await calls
            await asyncio.sleep(1.0)
            after = await health(url)
            async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as r:
                text = await r.text()
    finally:
        if created:
            remove_veth()
    for run in (first, second):
        assert "Call established" in run.log, run.log[-1500:]
        assert run.heard is not None
        heard, rate = run.heard
        assert (abs(heard.astype(float)) > 1000).sum() / rate > 1.0  # the reply was heard
    assert [1, 1] in seen  # one call on each worker at the same time
    assert after["calls"] == 0
    assert metric(text, 'omni_rtc_calls_total{transport="sip"}') == 2
