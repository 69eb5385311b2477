"""Caller SRTP handled in the socket callback (aiortc_inbound), between two real aiortc
peers over loopback: the media, its statistics and RTCP arrive as through aiortc's queue."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aioice.ice import StunProtocol
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcdtlstransport import RTCDtlsTransport

from omni_rtc.transports import aiortc_inbound as inbound
from omni_rtc.transports.aiortc_inbound import _Rest, is_srtp, receive_inline

from ..helpers import needs_tested_aiortc, wait_for
from ..media import best_circular_correlation, envelope
from ..peer import LoopingPcmTrack, PatternVideoTrack

pytestmark = needs_tested_aiortc

RATE = 48_000


def bursts() -> bytes:
    """2 s of noise bursts of uneven lengths: an envelope with one best alignment."""
    rng = np.random.default_rng(5)
    on = np.zeros(2 * RATE)
    start = 0
    for length_ms, gap_ms in ((120, 80), (300, 60), (60, 200), (200, 100), (400, 480)):
        n = RATE * length_ms // 1000
        on[start : start + n] = 1.0
        start += n + RATE * gap_ms // 1000
    noise = rng.normal(0, 6000, 2 * RATE) * on
    return np.clip(noise, -32000, 32000).astype("<i2").tobytes()


class Pair:
    """A caller sending audio and video to a callee that decodes them (aiortc's decoders)."""

    def __init__(self) -> None:
        self.source = bursts()
        self.caller = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.callee = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.audio: list[bytes] = []
        self.video_frames = 0
        self._readers: list[asyncio.Task[None]] = []
        self.callee.on("track", self._on_track)

    def _on_track(self, track: Any) -> None:
        self._readers.append(asyncio.ensure_future(self._read(track)))

    async def _read(self, track: Any) -> None:
        while True:
            frame = await track.recv()
            if track.kind == "audio":
                samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
                self.audio.append(samples.astype("<i2").tobytes())
            else:
                self.video_frames += 1

    async def connect(self) -> None:
        self.caller.addTrack(LoopingPcmTrack(self.source, RATE))
        self.caller.addTrack(PatternVideoTrack(320, 240, fps=15))
        await self.caller.setLocalDescription(await self.caller.createOffer())
        await self.callee.setRemoteDescription(self.caller.localDescription)
        await self.callee.setLocalDescription(await self.callee.createAnswer())
        await self.caller.setRemoteDescription(self.callee.localDescription)
        await wait_for(lambda: self.callee.connectionState == "connected", 10)

    @property
    def dtls(self) -> RTCDtlsTransport:
        transport = self.callee.getTransceivers()[0].receiver.transport
        assert transport is not None
        return transport

    async def close(self) -> None:
        for reader in self._readers:
            reader.cancel()
        await self.caller.close()
        await self.callee.close()


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    pair = Pair()
    try:
        await pair.connect()
        yield pair
    finally:
        await pair.close()


async def counts(pc: RTCPeerConnection) -> dict[str, int]:
    """RTP packets its receivers counted, by kind, and datagrams its DTLS transport got."""
    out: dict[str, int] = {}
    for s in (await pc.getStats()).values():
        if s.type == "inbound-rtp":
            out[s.kind] = out.get(s.kind, 0) + s.packetsReceived
        elif s.type == "transport":
            out["transport"] = out.get("transport", 0) + s.packetsReceived
    return out


def test_the_layout_is_what_this_module_expects() -> None:
    assert inbound.layout_problems() == []


def test_rfc7983_demultiplexing() -> None:
    assert [is_srtp(bytes([b])) for b in (0, 3, 20, 63, 64, 127)] == [False] * 6
    assert [is_srtp(bytes([b])) for b in (128, 150, 191)] == [True] * 3
    assert not is_srtp(bytes([192]))
    assert not is_srtp(b"")


async def test_caller_media_arrives_through_the_socket_callback(pair: Pair) -> None:
    inline = receive_inline(pair.dtls)
    assert inline is not None
    before = await counts(pair.callee)
    await asyncio.sleep(3.0)
    after = await counts(pair.callee)
    handled = inline.handled
    assert inline.rtp_in is not None
    plain = inline.rtp_in.handled
    got = {kind: after[kind] - before.get(kind, 0) for kind in after}
    assert got["audio"] >= 100, got
    assert got["video"] >= 25, got
    # every datagram DTLS counted, and every RTP packet the receivers counted, came this
    # way (plus the caller's RTCP: sender reports, receiver reports)
    assert handled >= got["audio"] + got["video"]
    assert handled - (got["audio"] + got["video"]) < 20
    assert abs(got["transport"] - handled) <= 2
    # and the RTP packets past aiortc's coroutines (aiortc_rtp_in), all but the first
    assert got["audio"] + got["video"] - plain < 10
    # the audio decodes and matches what was sent; the video decodes
    reference = envelope(pair.source, RATE)
    heard = envelope(b"".join(pair.audio), RATE)
    assert best_circular_correlation(reference, heard) > 0.8  # 0.895 through aiortc's path
    assert pair.video_frames >= 25
    # RTCP came through too: the callee knows the caller's sender reports
    stats = await pair.callee.getStats()
    assert any(s.type == "remote-outbound-rtp" for s in stats.values())


async def test_a_packet_behind_queued_ones_waits_its_turn(pair: Pair) -> None:
    inline = receive_inline(pair.dtls)
    assert inline is not None
    connection = inline.connection
    protocol = next(p for p in connection._protocols if isinstance(p, StunProtocol))
    handled = inline.handled
    connection._queue.put_nowait((b"\x80\x00" + bytes(30), 1))  # an older (bogus) packet
    protocol.datagram_received(b"\x80\x01" + bytes(30), ("127.0.0.1", 9))
    assert connection._queue.qsize() == 2
    assert inline.handled == handled
    await wait_for(lambda: connection._queue.empty(), 2)
    await wait_for(lambda: inline.handled > handled + 10, 2)  # and then back to inline


async def test_a_handler_that_waits_is_finished_in_a_task_and_order_is_kept(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = pair.dtls._handle_rtp_data
    order: list[tuple[int, int]] = []  # (ssrc, sequence number) as aiortc gets them
    calls = 0

    async def slow(data: bytes, arrival_time_ms: int) -> None:
        nonlocal calls
        calls += 1
        if calls % 10 == 0:
            await asyncio.sleep(0.05)  # e.g. a send that has to wait: others arrive meanwhile
        order.append((int.from_bytes(data[8:12], "big"), int.from_bytes(data[2:4], "big")))
        await original(data, arrival_time_ms=arrival_time_ms)

    monkeypatch.setattr(pair.dtls, "_handle_rtp_data", slow)
    inline = receive_inline(pair.dtls)
    assert inline is not None
    inline.rtp_in = None  # aiortc's handlers: the path under test
    frames = pair.video_frames
    await wait_for(lambda: len(order) > 150 and pair.video_frames > frames + 10, 8)
    assert inline.active
    assert inline.waited > 0
    assert inline.handled >= len(order)
    last: dict[int, int] = {}
    for ssrc, seq in order:
        if ssrc in last:
            assert (seq - last[ssrc]) % 65536 == 1, (ssrc, last[ssrc], seq)
        last[ssrc] = seq


class FailsOnce:
    """An SRTP session whose first unprotect from the inline path raises."""

    def __init__(self, session: Any, inside: list[bool]) -> None:
        self.session = session
        self.inside = inside
        self.failed = False

    def unprotect(self, data: bytes) -> bytes:
        if self.inside[0] and not self.failed:
            self.failed = True
            raise RuntimeError("boom")
        return bytes(self.session.unprotect(data))

    def unprotect_rtcp(self, data: bytes) -> bytes:
        return bytes(self.session.unprotect_rtcp(data))


def track_inside(inline: Any, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """[True] while ``inline.receive`` runs (so a fault hits the inline path only)."""
    inside = [False]
    receive = inline.receive

    def receiving(data: bytes) -> None:
        inside[0] = True
        try:
            receive(data)
        finally:
            inside[0] = False

    monkeypatch.setattr(inline, "receive", receiving)
    return inside


@pytest.mark.parametrize("where", ["handler", "unprotect"])
async def test_a_failure_goes_back_to_aiortcs_path(
    pair: Pair, where: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dtls: Any = pair.dtls
    inline = receive_inline(pair.dtls)
    assert inline is not None
    inline.rtp_in = None  # aiortc's handlers: the path under test
    inside = track_inside(inline, monkeypatch)
    if where == "handler":
        original = dtls._handle_rtp_data
        failed = False

        async def fails_once(data: bytes, arrival_time_ms: int) -> None:
            nonlocal failed
            if inside[0] and not failed:
                failed = True
                raise RuntimeError("boom")
            await original(data, arrival_time_ms=arrival_time_ms)

        monkeypatch.setattr(dtls, "_handle_rtp_data", fails_once)
    else:
        monkeypatch.setattr(dtls, "_rx_srtp", FailsOnce(dtls._rx_srtp, inside))
    with caplog.at_level(logging.ERROR, "omni_rtc.webrtc"):
        await wait_for(lambda: not inline.active, 2)
    assert "back to aiortc's receive path" in caplog.text
    assert not any("datagram_received" in vars(p) for p in inline.connection._protocols)
    handled, frames = inline.handled, pair.video_frames
    await wait_for(lambda: pair.video_frames > frames + 10, 5)  # through aiortc's queue
    assert inline.handled == handled


async def test_a_handler_that_finds_the_connection_gone_ends_the_receive_loop(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    inline = receive_inline(pair.dtls)
    assert inline is not None
    inline.rtp_in = None  # aiortc's handlers: the path under test
    inside = track_inside(inline, monkeypatch)
    original = pair.dtls._handle_rtp_data

    async def gone(data: bytes, arrival_time_ms: int) -> None:
        if inside[0]:
            raise ConnectionError("Cannot send encrypted RTP, not connected")
        await original(data, arrival_time_ms=arrival_time_ms)

    monkeypatch.setattr(pair.dtls, "_handle_rtp_data", gone)
    await wait_for(lambda: pair.dtls.state == "closed", 3)  # as aiortc's own loop ends
    assert not inline.active


async def test_dtls_leaving_connected_puts_aiortcs_path_back(pair: Pair) -> None:
    inline = receive_inline(pair.dtls)
    assert inline is not None
    protocols = list(inline.connection._protocols)
    assert all("datagram_received" in vars(p) for p in protocols)
    await pair.callee.close()
    assert not inline.active
    assert not any("datagram_received" in vars(p) for p in protocols)


async def test_not_connected_yet_means_nothing_changes() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        transport = pc.getTransceivers()[0].receiver.transport
        assert receive_inline(transport) is None
    finally:
        await pc.close()


async def test_the_rest_of_a_started_coroutine_gets_results_and_exceptions_thrown_in() -> None:
    loop = asyncio.get_running_loop()
    ok: asyncio.Future[int] = loop.create_future()
    bad: asyncio.Future[int] = loop.create_future()
    seen: list[object] = []

    async def handler() -> None:
        seen.append(await ok)
        try:
            await bad
        except ValueError as exc:
            seen.append(str(exc))

    coroutine = handler()
    pending = coroutine.send(None)
    assert pending is ok
    task = asyncio.ensure_future(_wrap(_Rest(coroutine, pending)))
    loop.call_soon(ok.set_result, 7)
    loop.call_later(0.01, bad.set_exception, ValueError("late"))
    await task
    assert seen == [7, "late"]


async def test_cancelling_the_task_cancels_the_rest_of_the_coroutine() -> None:
    loop = asyncio.get_running_loop()
    never: asyncio.Future[None] = loop.create_future()
    seen: list[str] = []

    async def handler() -> None:
        try:
            await never
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    coroutine = handler()
    task = asyncio.ensure_future(_wrap(_Rest(coroutine, coroutine.send(None))))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]


async def _wrap(rest: _Rest) -> None:
    await rest
