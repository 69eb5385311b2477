"""Hostile data-channel input never kills a call: each bad message gets an error back."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc import rtcsctptransport as sctp

from omni_rtc.transports import sctp_guard
from tests.conftest import run_bridge
from tests.helpers import sine_pcm
from tests.peer import LoopingPcmTrack, TestPeer


async def send_raw(peer: TestPeer, pp_id: int, data: bytes) -> None:
    """Bytes as a text message, bypassing aiortc's own encoding (a broken or hostile peer)."""
    transport = peer.channel.transport
    transport._data_channel_queue.append((peer.channel, pp_id, data))
    await transport._data_channel_flush()


async def next_error(peer: TestPeer, seen: int) -> dict:
    _, error = await peer.wait_message(
        lambda m: m.get("type") == "error" and len(peer.of_type("error")) > seen
    )
    return error


async def still_alive(peer: TestPeer) -> None:
    before = len(peer.of_type("pong"))
    peer.send({"type": "ping"})
    await peer.wait_message(
        lambda m: m.get("type") == "pong" and len(peer.of_type("pong")) > before
    )
    assert peer.pc.connectionState == "connected"


BAD_TEXT = [
    ("not json", "not JSON"),
    ("[" * 1000 + "]" * 1000, "nested too deeply"),
    ('{"a":' * 200 + "1" + "}" * 200, "nested too deeply"),
    ('{"type": "ptt", "action": 1' + "0" * 5000 + "}", "short JSON"),
    ('{"type": "ptt", "action": ' + "9" * 4000 + "}", "action"),  # parses: a number
    ("x" * 5000, "short JSON"),
    ('{"type": "dance"}', "unknown message"),
    ("[1, 2, 3]", "unknown message"),
    ('"ptt"', "unknown message"),
    ("null", "unknown message"),
    ('{"type": "ptt", "action": "sideways"}', "action"),
    ('{"type": "ptt", "action": "start"}', "hands-free"),
    ("", "not JSON"),
    ('{"type": "ptt", "action": "start"', "not JSON"),
    ('{"type": "\\ud800"}', "unknown message"),
]


async def test_every_bad_message_is_answered_and_the_call_survives() -> None:
    assert sctp_guard.install()
    async with run_bridge() as bridge:
        peer = TestPeer(bridge.url, LoopingPcmTrack(sine_pcm(1.0, 48_000)))
        try:
            await peer.call()
            await peer.wait_connected()
            for text, expected in BAD_TEXT:
                seen = len(peer.of_type("error"))
                peer.channel.send(text)
                _, error = await peer.wait_message(
                    lambda m, seen=seen: (
                        m.get("type") == "error" and len(peer.of_type("error")) > seen
                    )
                )
                assert expected in error["message"], (text[:40], error)
            # invalid UTF-8 in a text message (aiortc would raise inside its receive loop)
            seen = len(peer.of_type("error"))
            await send_raw(peer, sctp.WEBRTC_STRING, b'{"type": "\xff\xfe"}')
            await peer.wait_message(
                lambda m: m.get("type") == "error" and len(peer.of_type("error")) > seen
            )
            # binary messages
            seen = len(peer.of_type("error"))
            peer.channel.send(b"\x00\x01binary")
            await peer.wait_message(
                lambda m: m.get("type") == "error" and len(peer.of_type("error")) > seen
            )
            await still_alive(peer)
            assert bridge.manager.active == 1
        finally:
            await peer.close()


async def test_a_message_over_the_advertised_limit_is_discarded_early(caplog) -> None:
    sctp_guard.install()
    async with run_bridge() as bridge:
        peer = TestPeer(bridge.url, LoopingPcmTrack(sine_pcm(1.0, 48_000)))
        try:
            await peer.call()
            await peer.wait_connected()
            peer.channel.transport._remote_max_message_size = 0  # the peer ignores our limit
            seen = len(peer.of_type("error"))
            cpu = time.process_time()
            peer.channel.send("x" * (4 * 1024 * 1024))
            await peer.wait_message(
                lambda m: m.get("type") == "error" and len(peer.of_type("error")) > seen, 60
            )
            # the rest of the message is dropped as it arrives; then the channel works on
            await asyncio.sleep(0.5)
            await still_alive(peer)
            spent = time.process_time() - cpu
            assert bridge.manager.active == 1
        finally:
            await peer.close()
    assert "discarded" in caplog.text
    print(f"4 MiB message: {spent:.1f} CPU-s for sender and receiver together")


@pytest.mark.parametrize("heartbeat", [True, False])
async def test_a_vanished_peer_is_detected_in_seconds_and_counted_as_failed(heartbeat) -> None:
    async with run_bridge() as bridge:
        track = LoopingPcmTrack(sine_pcm(1.0, 48_000))
        peer = TestPeer(bridge.url, track)
        try:
            await peer.call()
            await peer.wait_connected()
            if heartbeat:
                peer.send({"type": "ping"})
            call = bridge.manager.list()[0]
            # the peer's network goes away: no audio, no messages, no ICE consent replies
            for transceiver in peer.pc.getTransceivers():
                transport = transceiver.sender.transport
                await transport.transport.iceGatherer._connection.close()
            gone = time.monotonic()
            await asyncio.wait_for(call.closed.wait(), 10)
            detected = time.monotonic() - gone
            metrics = bridge.metrics.render().decode()
        finally:
            await peer.close()
    assert call.ended_reason == "peer_failed"
    assert detected < 5.0 + 1.0 + 2.0, detected  # not aioice's 30 s
    assert 'omni_rtc_calls_failed_total{reason="peer_failed",transport="webrtc"} 1.0' in metrics
