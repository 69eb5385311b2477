"""Fuzz: no bytes make the SIP parser, the user agent or the RTP receive path raise."""

from __future__ import annotations

import contextlib

from aiortc.rtp import RtpPacket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omni_rtc.sip.jitter import DtmfDetector, ReorderBuffer
from omni_rtc.sip.message import ParseError, StreamFramer, parse
from omni_rtc.sip.sdp import SdpError, SessionDescription, negotiate
from omni_rtc.sip.transaction import Peer
from tests.sip_unit import FIXTURES, make_ua

SEEDS = [p.read_bytes() for p in sorted(FIXTURES.glob("*.sip"))]
TCP = Peer("TCP", "10.77.0.2", 40000, "10.77.0.1", 5060, conn=1)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A recorded request with a few bytes replaced, inserted, deleted or lines shuffled."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "dupline"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "replace" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[pos:pos] = draw(
                st.sampled_from([b",", b";", b"<", b'"', b"\r\n", b" ", b":", b"\x00"])
            )
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 20))]
        elif kind == "truncate":
            del data[pos:]
        else:
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[draw(st.integers(0, len(lines) - 1))])
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


@FUZZ
@given(st.one_of(st.binary(max_size=2000), mutated()))
def test_parse_raises_only_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse(data)
    with contextlib.suppress(ParseError):
        parse(data, stream=True)


@FUZZ
@given(st.lists(st.one_of(mutated(), st.sampled_from(SEEDS)), min_size=1, max_size=6))
def test_user_agent_never_raises(messages: list[bytes]) -> None:
    ua = make_ua()
    now = 0.0
    for data in messages:
        ua.receive(data, Peer("UDP", "10.77.0.2", 5070, "10.77.0.1", 5060), now)
        for call in ua.calls:
            ua.accept(call, 40000, now)
        now += 0.3
        ua.handle_timers(now)
    ua.receive(b"".join(messages), TCP, now)
    ua.handle_timers(now + 100)
    ua.drain()


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_stream_framer_raises_only_parse_error(chunks: list[bytes]) -> None:
    framer = StreamFramer(max_bytes=4096)
    try:
        for chunk in chunks:
            for message in framer.feed(chunk):
                with contextlib.suppress(ParseError):
                    parse(message, stream=True)
    except ParseError:
        pass


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=600), st.sampled_from(SEEDS).map(lambda s: s.partition(b"\r\n\r\n")[2])
    )
)
def test_sdp_raises_only_sdp_error(data: bytes) -> None:
    with contextlib.suppress(SdpError):
        negotiate(SessionDescription.parse(data))


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, 65535), st.integers(0, 3), st.binary(max_size=8)), max_size=60
    )
)
def test_reorder_and_dtmf_never_raise(packets: list[tuple[int, int, bytes]]) -> None:
    buf, dtmf = ReorderBuffer(), DtmfDetector()
    released = 0
    for seq, ssrc, payload in packets:
        packet = RtpPacket(payload_type=101, sequence_number=seq, timestamp=seq // 3, ssrc=ssrc,
                           payload=payload)  # fmt: skip
        for ready in buf.push(packet):
            released += 1
            dtmf.push(ready.payload, ready.timestamp)
    assert released <= len(packets)
