"""Calls end cleanly whichever way they end: nothing is left behind."""

from __future__ import annotations

import asyncio
import gc
import os
import time
import weakref

import aiohttp
import aioice.ice
import pytest

from tests.conftest import run_bridge
from tests.helpers import sine_pcm
from tests.peer import LoopingPcmTrack, TestPeer


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def vanish(peer: TestPeer) -> None:
    """The peer disappears without a word (network gone): close its ICE sockets only."""
    for transceiver in peer.pc.getTransceivers():
        transport = transceiver.sender.transport
        if transport is not None:
            await transport.transport.iceGatherer._connection.close()


ENDINGS = ["hangup", "peer_closed", "upstream_lost", "never_connected", "ice_failed"]


@pytest.fixture
def fast_consent(monkeypatch: pytest.MonkeyPatch) -> None:
    # aioice checks consent every 5 s and gives up after 6 failures (~30 s); shrink it.
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)


async def test_twenty_calls_ending_every_way_leave_nothing_behind(fast_consent) -> None:
    baseline_tasks = {t for t in asyncio.all_tasks()}
    async with run_bridge(["--peer-timeout", "1.5", "--max-calls", "4"]) as bridge:
        await asyncio.sleep(0.1)
        fds_before = open_fds()
        server_pcs: list[weakref.ref] = []
        end_seconds: dict[str, list[float]] = {e: [] for e in ENDINGS}
        for i in range(20):
            ending = ENDINGS[i % len(ENDINGS)]
            peer = TestPeer(bridge.url, LoopingPcmTrack(sine_pcm(1.0, 48_000)))
            if ending == "never_connected":
                await peer.pc.setLocalDescription(await peer.pc.createOffer())
                # post the offer but never apply the answer: ICE never completes
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(
                        bridge.url + "/offer",
                        json={"sdp": peer.pc.localDescription.sdp, "type": "offer"},
                    ) as response,
                ):
                    assert response.status == 200
            else:
                await peer.call()
                await peer.wait_connected()
            call = bridge.manager.list()[0]
            server_pcs.append(weakref.ref(call.pc))
            record = bridge.emulator.sessions[-1]
            started = time.monotonic()
            if ending == "hangup":
                assert await peer.hangup() == 204
            elif ending == "peer_closed":
                await peer.pc.close()
            elif ending == "upstream_lost":
                # lost, and the reconnect is refused (the key was revoked): the call ends
                bridge.emulator.config.reject_auth = True
                record.abort()
            elif ending == "ice_failed":
                await vanish(peer)
            await asyncio.wait_for(call.closed.wait(), 8)
            end_seconds[ending].append(time.monotonic() - started)
            await asyncio.wait_for(record.closed.wait(), 2)  # upstream session closed too
            assert (
                call.ended_reason
                in {
                    "hangup": ("hangup",),
                    "peer_closed": ("peer_closed",),
                    "upstream_lost": ("upstream_auth",),
                    "never_connected": ("peer_timeout",),
                    "ice_failed": ("peer_failed", "peer_closed"),
                }[ending]
            ), (ending, call.ended_reason)
            await peer.close()
            bridge.emulator.config.reject_auth = False
            del call
        assert bridge.manager.active == 0
        await asyncio.sleep(0.3)
        gc.collect()
        alive = [r for r in server_pcs if r() is not None]
        assert not alive, [ENDINGS[i % 5] for i, r in enumerate(server_pcs) if r() is not None]
        leftover = [t for t in asyncio.all_tasks() - baseline_tasks if "call-" in t.get_name()]
        assert not leftover, leftover
        assert open_fds() <= fds_before + 3, (fds_before, open_fds())
        metrics = bridge.metrics.render().decode()
    assert 'omni_rtc_calls_active{transport="webrtc"} 0.0' in metrics
    assert 'omni_rtc_calls_total{transport="webrtc"} 20.0' in metrics
    # once the bridge knows the peer or upstream is gone, everything ends within 2 s
    for ending in ("hangup", "peer_closed", "upstream_lost"):
        assert max(end_seconds[ending]) < 2.0, (ending, end_seconds[ending])
    assert max(end_seconds["never_connected"]) < 1.5 + 2.0
    assert max(end_seconds["ice_failed"]) < 6 * 0.2 * 1.2 + 2.0 + 1.0
