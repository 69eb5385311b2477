"""The Opus reply on the shared media clock (aiortc_reply_sender), between two real aiortc
peers over loopback: the far end decodes what was pushed, its RTP is well formed (one
sequence number and 960 timestamp ticks a packet, the negotiated extensions), aiortc's
RTCP and statistics see the packets, and stopping the sender stops the ticking."""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from typing import Any

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
)
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from omni_rtc.media.media_clock import MediaClock
from omni_rtc.media.reply_track import OpusReplyTrack, ReplyTrack
from omni_rtc.transports import aiortc_reply_sender
from omni_rtc.transports.aiortc_reply_sender import clock_reply

from ..helpers import needs_tested_aiortc, wait_for
from ..media import best_circular_correlation, envelope

pytestmark = needs_tested_aiortc

RATE = 24_000
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)


def bursts(seconds: int = 2) -> bytes:
    """Noise bursts of uneven lengths: an envelope with one best alignment."""
    rng = np.random.default_rng(9)
    on = np.zeros(seconds * RATE)
    start = 0
    for length_ms, gap_ms in ((120, 80), (300, 60), (60, 200), (200, 100), (400, 480)):
        n = RATE * length_ms // 1000
        on[start : start + n] = 1.0
        start += n + RATE * gap_ms // 1000
    noise = rng.normal(0, 6000, seconds * RATE) * on
    return np.clip(noise, -32000, 32000).astype("<i2").tobytes()


class Reply:
    """A bridge-like end sending a ReplyTrack as Opus on the clock to a listening peer."""

    def __init__(self) -> None:
        self.bridge = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.listener = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.reply = ReplyTrack(RATE)
        self.opus = OpusReplyTrack(self.reply)
        self.heard: list[bytes] = []
        self.packets: list[Any] = []
        self._readers: list[asyncio.Task[None]] = []
        self.listener.on("track", self._on_track)
        self.sender = self.bridge.addTrack(self.opus)
        self.clocked = clock_reply(self.sender, self.opus)

    def _on_track(self, track: Any) -> None:
        self._readers.append(asyncio.ensure_future(self._read(track)))

    async def _read(self, track: Any) -> None:
        while True:
            frame = await track.recv()
            samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
            self.heard.append(samples.astype("<i2").tobytes())

    async def connect(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = RTCRtpReceiver._handle_rtp_packet

        async def record(receiver: Any, packet: Any, arrival_time_ms: int) -> None:
            self.packets.append(packet)
            await original(receiver, packet, arrival_time_ms)

        monkeypatch.setattr(RTCRtpReceiver, "_handle_rtp_packet", record)
        self.listener.addTransceiver("audio", direction="recvonly")
        await self.listener.setLocalDescription(await self.listener.createOffer())
        await self.bridge.setRemoteDescription(self.listener.localDescription)
        await self.bridge.setLocalDescription(await self.bridge.createAnswer())
        await self.listener.setRemoteDescription(self.bridge.localDescription)
        await wait_for(lambda: self.bridge.connectionState == "connected", 10)

    async def close(self) -> None:
        for reader in self._readers:
            reader.cancel()
        await self.listener.close()
        await self.bridge.close()


@pytest.fixture
async def reply(monkeypatch: pytest.MonkeyPatch) -> Any:
    reply = Reply()
    try:
        await reply.connect(monkeypatch)
        yield reply
    finally:
        await reply.close()


def test_the_layout_is_what_this_module_expects() -> None:
    assert aiortc_reply_sender.layout_problems() == []


async def test_the_far_end_hears_the_reply_in_well_formed_rtp(reply: Reply) -> None:
    assert reply.clocked is not None
    source = bursts()
    reply.reply.push(source + source)  # heard while the second plays: one whole loop
    await wait_for(lambda: reply.clocked is not None and reply.clocked.sent > 160, 8)
    # what was pushed is what was heard (48 kHz stereo at the far end: its first channel)
    heard48 = np.frombuffer(b"".join(reply.heard), dtype="<i2")
    heard24 = heard48[::2].tobytes()
    correlation = best_circular_correlation(envelope(source, RATE), envelope(heard24, RATE))
    assert correlation > 0.8, correlation
    # RTP: one sequence number and 20 ms of the 48 kHz clock a packet, marker set, the
    # negotiated mid on every packet
    packets = reply.packets
    assert len(packets) > 150
    mid = reply.bridge.getTransceivers()[0].mid
    for before, after in itertools.pairwise(packets):
        assert (after.sequence_number - before.sequence_number) % 65536 == 1
        assert (after.timestamp - before.timestamp) % 2**32 == 960
        assert after.marker == 1
        assert after.extensions.mid == mid
        assert after.extensions.abs_send_time is None  # aiortc offers it for video only
    # aiortc's statistics and RTCP see them: the bridge's sent count, the listener's
    # received count, and the sender reports the listener got (made from our counters)
    before = reply.clocked.sent
    sent = next(s for s in (await reply.bridge.getStats()).values() if s.type == "outbound-rtp")
    assert before <= sent.packetsSent <= reply.clocked.sent  # a beat may pass meanwhile
    stats = (await reply.listener.getStats()).values()
    received = next(s for s in stats if s.type == "inbound-rtp")
    assert received.packetsReceived >= reply.clocked.sent - 5
    assert received.packetsLost == 0
    remote = [
        s for s in (await reply.listener.getStats()).values() if s.type == "remote-outbound-rtp"
    ]
    assert remote, "no sender report reached the listener"
    assert 0 < remote[0].packetsSent <= reply.clocked.sent


async def test_stopping_the_sender_stops_the_ticking(reply: Reply) -> None:
    assert reply.clocked is not None
    await wait_for(lambda: reply.clocked is not None and reply.clocked.sent > 10, 5)
    beat = MediaClock.of_running_loop()
    assert id(reply.clocked) in beat.endpoints
    await reply.sender.stop()
    assert id(reply.clocked) not in beat.endpoints
    assert reply.opus.readyState == "ended"
    sent = reply.clocked.sent
    await asyncio.sleep(0.1)
    assert reply.clocked.sent == sent


async def test_only_20_ms_frames_go_on_the_clock() -> None:
    pc = RTCPeerConnection()
    try:
        track = OpusReplyTrack(ReplyTrack(RATE, frame_ms=10))
        sender = pc.addTrack(track)
        assert clock_reply(sender, track) is None
        assert "_run_rtp" not in vars(sender)  # aiortc's own task
    finally:
        await pc.close()


async def test_the_header_carries_every_negotiated_extension() -> None:
    pc = RTCPeerConnection()
    try:
        track = OpusReplyTrack(ReplyTrack(RATE))
        sender: Any = pc.addTrack(track)
        extensions = [
            RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
            RTCRtpHeaderExtensionParameters(
                id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
            ),
        ]
        configured = HeaderExtensionsMap()
        configured.configure(RTCRtpParameters(headerExtensions=extensions))
        sender._RTCRtpSender__rtp_header_extensions_map = configured
        sender._RTCRtpSender__mid = "7"
        clocked = clock_reply(sender, track)
        assert clocked is not None
        clocked._make_header(OPUS)
        ntp = 0x1234_5678_9ABC_DEF0
        for n in range(3):
            data = clocked.packet(b"opus" * n, 4_000_000_000 + 960 * n, ntp + n)
            clocked._sequence_number = (clocked._sequence_number + 1) & 0xFFFF
            packet = RtpPacket.parse(data, configured)
            assert packet.payload_type == 111
            assert packet.marker == 1
            assert packet.ssrc == sender._ssrc
            assert packet.timestamp == 4_000_000_000 + 960 * n
            assert packet.payload == b"opus" * n
            assert packet.extensions.mid == "7"
            assert packet.extensions.abs_send_time == ((ntp + n) >> 14) & 0xFFFFFF
        # none negotiated: a bare 12-byte header
        sender._RTCRtpSender__rtp_header_extensions_map = HeaderExtensionsMap()
        sender._RTCRtpSender__mid = None
        clocked._make_header(OPUS)
        assert clocked.packet(b"x", 0, ntp)[0] == 0x80
        assert len(clocked.packet(b"x", 0, ntp)) == 13
    finally:
        await pc.close()


def packets_heard(reply: Reply) -> int:
    return len(reply.packets)


async def test_an_ended_track_ends_the_sender_task_as_aiortcs_would(reply: Reply) -> None:
    assert reply.clocked is not None
    await wait_for(lambda: reply.clocked is not None and reply.clocked.sent > 10, 5)
    reply.opus.stop()
    await wait_for(lambda: reply.clocked is not None and reply.clocked.ended is not None, 1)
    assert reply.clocked.ended == "track ended"
    assert id(reply.clocked) not in MediaClock.of_running_loop().endpoints
    await asyncio.wait_for(reply.sender.stop(), 1)


async def test_a_disabled_sender_reads_its_track_and_sends_nothing(reply: Reply) -> None:
    assert reply.clocked is not None
    await wait_for(lambda: reply.clocked is not None and reply.clocked.sent > 10, 5)
    reply.sender._enabled = False
    reply.reply.push(bytes(RATE * 2))  # 1 s
    sent = reply.clocked.sent
    await wait_for(lambda: reply.reply.queued_ms == 0, 2)  # read, as aiortc reads it
    assert reply.clocked.sent == sent
    reply.sender._enabled = True
    await wait_for(lambda: reply.clocked is not None and reply.clocked.sent > sent + 5, 1)


async def test_another_opus_reply_put_in_its_place_goes_on_in_the_same_stream(
    reply: Reply,
) -> None:
    assert reply.clocked is not None
    await wait_for(lambda: reply.clocked is not None and reply.clocked.sent > 10, 5)
    heard = packets_heard(reply)
    reply.sender.replaceTrack(OpusReplyTrack(ReplyTrack(RATE)))
    await wait_for(lambda: packets_heard(reply) > heard + 20, 3)
    assert reply.clocked.ended is None
    for before, after in itertools.pairwise(reply.packets[heard - 5 :]):
        assert (after.sequence_number - before.sequence_number) % 65536 == 1
        assert (after.timestamp - before.timestamp) % 2**32 == 960


async def test_any_other_track_put_in_its_place_ends_the_ticking_with_a_warning(
    reply: Reply, caplog: pytest.LogCaptureFixture
) -> None:
    assert reply.clocked is not None
    await wait_for(lambda: reply.clocked is not None and reply.clocked.sent > 10, 5)
    with caplog.at_level(logging.WARNING, "omni_rtc.webrtc"):
        reply.sender.replaceTrack(ReplyTrack(RATE))
        await wait_for(lambda: reply.clocked is not None and reply.clocked.ended is not None, 1)
    assert reply.clocked.ended == aiortc_reply_sender.REPLACED
    assert "which is not sent" in caplog.text
    assert reply.opus.readyState == "live"  # not the sender's track any more: not stopped
    await asyncio.wait_for(reply.sender.stop(), 1)


async def test_a_failure_at_start_still_lets_the_sender_stop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    listener = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        track = OpusReplyTrack(ReplyTrack(RATE))
        sender = pc.addTrack(track)
        clocked = clock_reply(sender, track)
        assert clocked is not None

        def fails(codec: Any) -> None:
            raise struct.error("header")

        monkeypatch.setattr(clocked, "_make_header", fails)
        listener.addTransceiver("audio", direction="recvonly")
        with caplog.at_level(logging.ERROR, "omni_rtc.webrtc"):
            await listener.setLocalDescription(await listener.createOffer())
            await pc.setRemoteDescription(listener.localDescription)
            await pc.setLocalDescription(await pc.createAnswer())
            await listener.setRemoteDescription(pc.localDescription)
            await wait_for(lambda: "on the media clock failed" in caplog.text, 10)
        await asyncio.wait_for(sender.stop(), 1)  # aiortc's stop does not hang
    finally:
        await asyncio.wait_for(pc.close(), 5)
        await listener.close()


class Beats:
    """An endpoint of the media clock that counts its ticks, or fails every one."""

    def __init__(self, fail: bool = False) -> None:
        self.ticks = 0
        self.fail = fail

    def tick(self) -> None:
        self.ticks += 1
        if self.fail:
            raise RuntimeError("boom")


async def test_the_clock_logs_a_failing_endpoint_once_and_ticks_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    beat = MediaClock.of_running_loop()
    good, bad = Beats(), Beats(fail=True)
    with caplog.at_level(logging.ERROR, "omni_rtc.media"):
        beat.add(good)
        beat.add(bad)
        await wait_for(lambda: good.ticks > 10, 2)
    assert bad.ticks >= 10
    assert caplog.text.count("RTP send failed") == 1
    await beat.remove(bad)
    await beat.remove(good)
    ticks = good.ticks
    await asyncio.sleep(0.1)
    assert good.ticks == ticks  # the last one gone: the beat stopped
    beat.add(good)  # and starts again with the next
    await wait_for(lambda: good.ticks > ticks + 3, 1)
    await beat.remove(good)
