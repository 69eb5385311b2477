"""aiortc_rtp_in against aiortc's own handlers: the same packets into two receivers, one
through ``RTCDtlsTransport._handle_rtp_data``, one through ``RtpIn.handle``, must give the
same frames, the same RTCP feedback (REMB, NACK, PLI) and the same statistics."""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import types
from typing import Any

import pytest
from aiortc import rtcrtpreceiver
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcdtlstransport import RTCDtlsTransport, RtpRouter
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
    RTCRtpReceiveParameters,
    RTCRtpRtxParameters,
)
from aiortc.rtp import (
    HeaderExtensions,
    HeaderExtensionsMap,
    RtcpPacket,
    RtcpRrPacket,
    RtpPacket,
    unpack_header_extensions,
    wrap_rtx,
)

from omni_rtc.transports import aiortc_fastpath as fastpath
from omni_rtc.transports import aiortc_rtp_in
from omni_rtc.transports.aiortc_rtp_in import RtpIn, parse

from ..helpers import needs_tested_aiortc
from .test_aiortc_fastpath import OPUS, make_receiver, opus_packets, vp8_frames

pytestmark = needs_tested_aiortc

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
RTX = RTCRtpCodecParameters(
    mimeType="video/rtx", clockRate=90000, payloadType=98, parameters={"apt": 97}
)
MID_ID, ABS_SEND_TIME_ID, AUDIO_LEVEL_ID = 1, 3, 5
EXTENSIONS = [
    RTCRtpHeaderExtensionParameters(id=MID_ID, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
    RTCRtpHeaderExtensionParameters(
        id=ABS_SEND_TIME_ID, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
    ),
    RTCRtpHeaderExtensionParameters(
        id=AUDIO_LEVEL_ID, uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level"
    ),
]


def extensions_map() -> HeaderExtensionsMap:
    extensions = HeaderExtensionsMap()
    extensions.configure(RTCRtpParameters(headerExtensions=EXTENSIONS))
    return extensions


def ids(extensions: HeaderExtensionsMap | None = None) -> HeaderExtensions:
    """The extension ids a map reads (what ``parse`` is given)."""
    return vars(extensions or extensions_map())["_HeaderExtensionsMap__ids"]  # type: ignore[no-any-return]


class Side:
    """A receiver behind a stand-in DTLS transport with aiortc's router and extensions."""

    def __init__(self, kind: str) -> None:
        self.receiver, self.transport = make_receiver(kind)
        self.frames: list[tuple[bytes, int]] = []
        self.dtls: Any = types.SimpleNamespace(
            _rtp_router=RtpRouter(),
            _rtp_header_extensions_map=extensions_map(),
            _RTCDtlsTransport__log_debug=lambda *args: None,
        )
        assert fastpath.take_encoded_frames(
            self.receiver, lambda c, d, t: self.frames.append((d, t)), lambda: None
        )
        self.plain = RtpIn(self.dtls, self._waits)
        self.to_aiortc = 0

    @staticmethod
    def _waits(coroutine: Any, pending: Any) -> None:
        raise AssertionError("an RTCP send waited")

    async def start(self, codecs: list[RTCRtpCodecParameters], rtx: bool = False) -> None:
        encoding = RTCRtpDecodingParameters(
            ssrc=42,
            payloadType=codecs[0].payloadType or 0,
            rtx=RTCRtpRtxParameters(ssrc=43) if rtx else None,
        )
        await self.receiver.receive(RTCRtpReceiveParameters(codecs=codecs, encodings=[encoding]))
        self.dtls._rtp_router.register_receiver(
            self.receiver,
            ssrcs=[42, 43] if rtx else [42],
            payload_types=[c.payloadType for c in codecs],
        )

    async def give(self, data: bytes, arrival_ms: int, plainly: bool) -> None:
        if plainly and self.plain.handle(data, arrival_ms):
            return
        self.to_aiortc += plainly
        await RTCDtlsTransport._handle_rtp_data(self.dtls, data, arrival_ms)

    def feedback(self) -> list[bytes]:
        """RTCP sent but receiver reports (those go out on a random timer)."""
        return [
            bytes(p)
            for data in self.transport.sent
            for p in RtcpPacket.parse(data)
            if not isinstance(p, RtcpRrPacket)
        ]

    def statistics(self) -> dict[int, tuple[Any, ...]]:
        streams = vars(self.receiver)["_RTCRtpReceiver__remote_streams"]
        return {
            ssrc: (s.base_seq, s.max_seq, s.cycles, s.packets_received, s.jitter)
            for ssrc, s in streams.items()
        }


class Clock:
    """``time.time`` for aiortc's receiver: the jitter it computes depends on it."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def time(self) -> float:
        return self.now


def serialize(packet: RtpPacket, extensions: HeaderExtensionsMap) -> bytes:
    return packet.serialize(extensions)


def video_stream(seed: int) -> list[tuple[bytes, int]]:
    """VP8 packets as a browser's would come: abs-send-time and mid on every packet, some
    lost, some late, one twice, some padded, some with CSRCs, a retransmission (RTX) of a
    lost one, and an arrival time each (ms)."""
    rng = random.Random(seed)
    extensions = extensions_map()
    frames = vp8_frames(60, gop=30)
    packets: list[RtpPacket] = []
    seq = 65_500  # wraps
    for i, frame in enumerate(frames):
        payloads = Vp8Encoder._packetize(frame, i)
        for j, payload in enumerate(payloads):
            packet = RtpPacket(payload_type=97, sequence_number=seq, timestamp=3000 * i, ssrc=42)
            packet.payload = payload
            packet.marker = int(j == len(payloads) - 1)
            packet.extensions.mid = "1"
            packet.extensions.abs_send_time = (i * 33 * 262) & 0xFFFFFF  # 6.18 fixed point
            if rng.random() < 0.1:
                packet.padding_size = rng.randint(1, 40)
            if rng.random() < 0.05:
                packet.csrc = [7, 8]
            packets.append(packet)
            seq = (seq + 1) % 65536
    out: list[tuple[bytes, int]] = []
    arrival = 1000
    lost: list[RtpPacket] = []
    index = 0
    while index < len(packets):
        packet = packets[index]
        arrival += rng.choice((0, 1, 2, 10, 30))
        roll = rng.random()
        if roll < 0.03:
            lost.append(packet)  # never arrives as such
        elif roll < 0.06 and index + 1 < len(packets):
            out.append((serialize(packets[index + 1], extensions), arrival))
            out.append((serialize(packet, extensions), arrival + 1))  # late by one
            index += 1
        else:
            out.append((serialize(packet, extensions), arrival))
            if roll > 0.99:
                out.append((serialize(packet, extensions), arrival))  # twice
        index += 1
    rtx = wrap_rtx(lost[0], payload_type=98, sequence_number=1, ssrc=43)
    rtx.extensions.abs_send_time = 12345
    out.insert(len(out) // 2, (serialize(rtx, extensions), out[len(out) // 2][1]))
    return out


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(rtcrtpreceiver, "time", clock)
    return clock


def test_the_layout_is_what_this_module_expects() -> None:
    assert aiortc_rtp_in.layout_problems() == []


@pytest.mark.parametrize("throttled", [False, True])
async def test_video_the_same_as_through_aiortcs_handlers(clock: Clock, throttled: bool) -> None:
    stream = video_stream(seed=3)
    sides = []
    for plainly in (False, True):
        side = Side("video")
        if throttled:
            assert fastpath.throttle_remb(side.receiver)
        await side.start([VP8, RTX], rtx=True)
        clock.now = 1_700_000_000.0
        for n, (data, arrival) in enumerate(stream):
            clock.now += 0.004
            await side.give(data, arrival, plainly)
            if n == len(stream) // 3:
                assert fastpath.request_key_frame(side.receiver)  # a PLI with the next
        await asyncio.sleep(0)  # video frames are handed over on the loop's next turn
        sides.append(side)
        await side.receiver.stop()
    aiortc, plain = sides
    assert plain.plain.handled == len(stream) - 1  # all but the retransmission
    assert plain.to_aiortc == 1
    assert len(plain.frames) > 20  # a frame behind a loss waits (aiortc's jitter buffer)
    assert plain.frames == aiortc.frames
    assert plain.statistics() == aiortc.statistics()
    assert plain.feedback() == aiortc.feedback()
    kinds = {RtcpPacket.parse(p)[0].__class__.__name__ for p in plain.feedback()}
    assert kinds == {"RtcpPsfbPacket", "RtcpRtpfbPacket"}  # REMB, PLI and NACK were sent
    missing = [vars(side.receiver)["_RTCRtpReceiver__nack_generator"].missing for side in sides]
    assert missing[0] == missing[1]


@pytest.mark.parametrize("in_order", [False, True])
async def test_audio_the_same_as_through_aiortcs_handlers(clock: Clock, in_order: bool) -> None:
    rng = random.Random(5)
    extensions = extensions_map()
    stream = []
    for i, payload in enumerate(opus_packets(120)):
        packet = RtpPacket(payload_type=96, sequence_number=i, timestamp=960 * i, ssrc=42)
        packet.payload = payload
        packet.extensions.mid = "0"
        packet.extensions.audio_level = (True, 30)
        if rng.random() > 0.05:
            stream.append((serialize(packet, extensions), 1000 + 20 * i + rng.randint(0, 15)))
    stream[10], stream[11] = stream[11], stream[10]
    sides = []
    for plainly in (False, True):
        side = Side("audio")
        if in_order:
            assert fastpath.low_latency_audio(side.receiver)
        await side.start([OPUS])
        for data, arrival in stream:
            clock.now += 0.02
            await side.give(data, arrival, plainly)
        sides.append(side)
        await side.receiver.stop()
    aiortc, plain = sides
    assert plain.plain.handled == len(stream)
    assert len(plain.frames) > 80
    assert plain.frames == aiortc.frames
    assert plain.statistics() == aiortc.statistics()
    assert plain.feedback() == aiortc.feedback() == []


async def test_what_it_leaves_to_aiortc() -> None:
    side = Side("video")
    await side.start([VP8])
    extensions = extensions_map()
    packet = RtpPacket(payload_type=97, sequence_number=1, timestamp=0, ssrc=42)
    packet.payload = Vp8Encoder._packetize(vp8_frames(1, gop=30)[0], 0)[0]
    good = serialize(packet, extensions)
    unknown_ssrc = good[:8] + (99).to_bytes(4, "big") + good[12:]
    unknown_type = good[:1] + bytes([100]) + good[2:]
    two_byte_extensions = bytearray(good)
    two_byte_extensions[0] |= 0x10
    two_byte_extensions[12:12] = b"\x10\x00\x00\x01" + b"\x03\x01\x05\x00"
    for data in (
        unknown_ssrc,
        unknown_type,
        bytes(two_byte_extensions),
        b"\x40" + good[1:],  # version 1
        good[:11],  # short
        good[:1] + good[1:2] + good[2:12],  # a header and nothing else: handled (no payload)
    ):
        side.plain.handled = 0
        handled = side.plain.handle(data, 0)
        assert handled == (data == good[:12]), data[:16].hex()
    side.receiver._enabled = False
    assert not side.plain.handle(good, 0)
    await side.receiver.stop()


def random_packet(rng: random.Random) -> tuple[RtpPacket, bytes]:
    packet = RtpPacket(
        payload_type=rng.randint(0, 127),
        marker=rng.randint(0, 1),
        sequence_number=rng.randint(0, 65535),
        timestamp=rng.randint(0, 2**32 - 1),
        ssrc=rng.randint(0, 2**32 - 1),
    )
    packet.payload = rng.randbytes(rng.randint(0, 1200))
    packet.csrc = [rng.randint(0, 2**32 - 1) for _ in range(rng.choice((0, 0, 1, 3)))]
    if rng.random() < 0.3:
        packet.padding_size = rng.randint(1, 255)
    if rng.random() < 0.7:
        packet.extensions.abs_send_time = rng.randint(0, 2**24 - 1)
    if rng.random() < 0.5:
        packet.extensions.mid = str(rng.randint(0, 9))
    if rng.random() < 0.5:
        packet.extensions.audio_level = (True, rng.randint(0, 127))
    return packet, packet.serialize(extensions_map())


def test_parse_reads_what_aiortcs_parser_reads() -> None:
    rng = random.Random(11)
    extensions = extensions_map()
    for _ in range(2000):
        _, data = random_packet(rng)
        parsed = parse(data, ids(extensions))
        assert parsed is not None
        light, abs_send_time = parsed
        theirs = RtpPacket.parse(data, extensions)
        assert (
            light.payload_type,
            light.marker,
            light.sequence_number,
            light.timestamp,
            light.ssrc,
            light.payload,
            light.padding_size,
        ) == (
            theirs.payload_type,
            theirs.marker,
            theirs.sequence_number,
            theirs.timestamp,
            theirs.ssrc,
            theirs.payload,
            theirs.padding_size,
        )
        assert abs_send_time == theirs.extensions.abs_send_time
        without = parse(data, HeaderExtensions())  # none negotiated: none read
        assert without is not None
        assert without[1] is None


def test_parse_leaves_what_aiortc_would_refuse_to_aiortc() -> None:
    rng = random.Random(12)
    for _ in range(500):
        _, data = random_packet(rng)
        cut = data[: rng.randint(0, len(data) - 1)]
        try:
            RtpPacket.parse(cut, extensions_map())
            refused = False
        except ValueError:
            refused = True
        if refused:
            assert parse(cut, ids()) is None
    # a one-byte extension element that runs past the extension block
    bad = bytearray(random_packet(random.Random(1))[1])
    bad[0] = 0x90
    bad[12:] = b"\xbe\xde\x00\x01" + b"\x3f\x00\x00\x00" + b"payload"
    with pytest.raises(ValueError, match="truncated"):
        unpack_header_extensions(0xBEDE, bytes(bad[16:20]))
    assert parse(bytes(bad), ids()) is None
    assert parse(bytes(bad), HeaderExtensions()) is None  # walked even with no ids


def with_extension(element: bytes, csrcs: int = 0) -> bytes:
    """An RTP packet with one one-byte extension block holding ``element`` (padded)."""
    block = element + bytes(-len(element) % 4)
    return (
        bytes([0x90 | csrcs, 96])
        + bytes(10)
        + bytes(4 * csrcs)
        + b"\xbe\xde"
        + (len(block) // 4).to_bytes(2, "big")
        + block
        + b"payload"
    )


@pytest.mark.parametrize(
    ("what", "data"),
    [
        ("a CSRC list cut short", bytes([0x83, 96]) + bytes(10) + bytes(8)),
        ("a mid that is not UTF-8", with_extension(bytes([MID_ID << 4 | 1]) + b"\xff\xfe")),
        (
            "a 4-byte abs-send-time",
            with_extension(bytes([ABS_SEND_TIME_ID << 4 | 3]) + b"\x01\x02\x03\x04"),
        ),
        ("a 2-byte audio level", with_extension(bytes([AUDIO_LEVEL_ID << 4 | 1]) + b"\x01\x02")),
    ],
)
def test_what_aiortcs_parser_refuses_is_left_to_it(what: str, data: bytes) -> None:
    with pytest.raises((ValueError, struct.error)):
        RtpPacket.parse(data, extensions_map())
    assert parse(data, ids()) is None, what


def test_an_id_that_names_two_extensions_is_read_as_aiortc_reads_it() -> None:
    both = HeaderExtensionsMap()
    both.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(
                    id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
                ),
                RTCRtpHeaderExtensionParameters(id=3, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
            ]
        )
    )
    data = with_extension(bytes([3 << 4 | 2]) + b"abc")
    theirs = RtpPacket.parse(data, both)
    parsed = parse(data, ids(both))
    assert parsed is not None
    assert (theirs.extensions.mid, theirs.extensions.abs_send_time) == ("abc", None)
    assert parsed[1] is None


async def test_a_failure_drops_the_packet_and_gives_aiortcs_handlers_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from omni_rtc.transports.aiortc_inbound import InlineReceiver

    inline: Any = InlineReceiver.__new__(InlineReceiver)
    side = Side("audio")
    await side.start([OPUS])
    inline.rtp_in = side.plain
    vars(side.receiver)["_RTCRtpReceiver__jitter_buffer"] = None  # .add fails
    packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=0, ssrc=42)
    packet.payload = opus_packets(1)[0]
    with caplog.at_level(logging.ERROR, "omni_rtc.webrtc"):
        assert inline._handled_plainly(packet.serialize(), 0)
    assert inline.rtp_in is None
    assert "aiortc's handlers from now on" in caplog.text
    await side.receiver.stop()
