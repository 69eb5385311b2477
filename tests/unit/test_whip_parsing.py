"""WHIP's pure parts: sdpfrag and candidate parsing, Link headers, offer checks."""

from __future__ import annotations

import pytest

from omni_rtc.config import IceServer
from signaling.whip_sdp import WhipError, link_header, parse_candidate, parse_offer, parse_sdpfrag

# What simple-whip-client 0.0~git20230131 (Debian 12) PATCHed, recorded in a test run
GSTREAMER_FRAGMENT = (
    "a=ice-ufrag:Gq5u\r\n"
    "a=ice-pwd:kHSkPDy1Xyw0Qx+rwhWqIX8/\r\n"
    "m=audio 9 RTP/AVP 0\r\n"
    "a=mid:video0\r\n"
    "a=candidate:1 1 UDP 2015363327 10.77.0.2 51409 typ host\r\n"
    "a=candidate:2 1 TCP 1015021823 10.77.0.2 9 typ host tcptype active\r\n"
    "a=candidate:3 1 TCP 1010827519 10.77.0.2 46585 typ host tcptype passive\r\n"
    "a=candidate:7 1 UDP 2015363839 fe80::acda:c9ff:fecd:456 35397 typ host\r\n"
    "a=end-of-candidates\r\n"
)
# The shape whip-whep builds from Chromium's candidates
BROWSER_FRAGMENT = (
    "a=ice-ufrag:Xr3A\r\n"
    "a=ice-pwd:3B9pD7UYwxe3Lp+Cq3bmv1nK\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
    "a=mid:0\r\n"
    "a=candidate:3757278410 1 udp 2113937151 127.0.0.1 40123 typ host generation 0 "
    "ufrag Xr3A network-cost 999\r\n"
    "a=candidate:842163049 1 udp 1677729535 203.0.113.7 61000 typ srflx raddr 0.0.0.0 "
    "rport 0 generation 0 ufrag Xr3A network-cost 999\r\n"
    "a=candidate:1 1 udp 2113937151 2f1c8a7e-3f6e-4bb5-9f61-4a0f0c5c2d1e.local 51234 typ host "
    "generation 0 ufrag Xr3A network-cost 999\r\n"
    "a=end-of-candidates\r\n"
)


def test_gstreamer_fragment() -> None:
    fragment = parse_sdpfrag(GSTREAMER_FRAGMENT)
    assert (fragment.ice_ufrag, fragment.ice_pwd) == ("Gq5u", "kHSkPDy1Xyw0Qx+rwhWqIX8/")
    assert fragment.end_of_candidates
    assert [(c.ip, c.port, c.protocol, c.tcpType) for c in fragment.candidates] == [
        ("10.77.0.2", 51409, "udp", None),
        ("10.77.0.2", 9, "tcp", "active"),
        ("10.77.0.2", 46585, "tcp", "passive"),
        ("fe80::acda:c9ff:fecd:456", 35397, "udp", None),
    ]


def test_browser_fragment() -> None:
    fragment = parse_sdpfrag(BROWSER_FRAGMENT.replace("\r\n", "\n"))  # bare LF is tolerated
    host, srflx, mdns = fragment.candidates
    assert (host.ip, host.type, host.priority, host.foundation) == (
        "127.0.0.1",
        "host",
        2113937151,
        "3757278410",
    )
    assert (srflx.type, srflx.relatedAddress, srflx.relatedPort) == ("srflx", "0.0.0.0", 0)
    assert mdns.ip.endswith(".local")


def test_candidates_only_fragment_has_no_credentials() -> None:
    fragment = parse_sdpfrag("a=candidate:1 1 udp 1 192.0.2.1 9 typ host\r\n")
    assert (fragment.ice_ufrag, fragment.ice_pwd, fragment.end_of_candidates) == (
        None,
        None,
        False,
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1 1 udp 1 192.0.2.1 9 typ", "malformed candidate"),
        ("1 1 udp 1 192.0.2.1 9 type host", "malformed candidate"),
        ("1 1 udp 1 192.0.2.1 9 typ host generation", "malformed candidate"),
        ("1 1 sctp 1 192.0.2.1 9 typ host", "transport must be udp or tcp"),
        ("1 1 udp 1 192.0.2.1 9 typ lan", "type must be one of"),
        ("1 0 udp 1 192.0.2.1 9 typ host", "component must be a number from 1"),
        ("1 1 udp -5 192.0.2.1 9 typ host", "priority must be a number"),
        ("1 1 udp 1 192.0.2.1 65536 typ host", "port must be a number from 0 to 65535"),
        ("1 1 udp 1 example.com 9 typ host", "IP address or an mDNS .local name"),
        ("1 1 udp 1 192.0.2.1 9 typ srflx raddr nowhere rport 1", "IP address or an mDNS"),
        ("f@@ 1 udp 1 192.0.2.1 9 typ host", "bad candidate foundation"),
    ],
)
def test_bad_candidates(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_candidate(value)


def test_bad_fragment_lines_name_the_line() -> None:
    with pytest.raises(WhipError, match="sdpfrag line 2 is not an SDP line"):
        parse_sdpfrag("a=ice-ufrag:x\r\nnot sdp\r\n")
    with pytest.raises(WhipError, match="sdpfrag line 1: malformed candidate"):
        parse_sdpfrag("a=candidate:1 2 3\r\n")


def test_link_headers_quote_credentials() -> None:
    assert link_header(IceServer("stun:stun.example.org:3478")) == (
        '<stun:stun.example.org:3478>; rel="ice-server"'
    )
    turn = IceServer("turn:turn.example.org?transport=udp", "1700000000:whip", 'p"a\\ss')
    assert link_header(turn) == (
        '<turn:turn.example.org?transport=udp>; rel="ice-server"; '
        'username="1700000000:whip"; credential="p\\"a\\\\ss"; credential-type="password"'
    )


OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "a=group:BUNDLE video0 audio1\r\n"
    "a=ice-ufrag:sess\r\na=ice-pwd:sessionpassword0123456789\r\n"
    "a=fingerprint:sha-256 "
    "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\r\n"
    "a=setup:actpass\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:video0\r\na=sendonly\r\n"
    "a=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 100\r\nc=IN IP4 0.0.0.0\r\na=mid:audio1\r\na=sendonly\r\n"
    "a=rtcp-mux\r\na=rtpmap:100 OPUS/48000/2\r\n"
)


def test_offer_with_session_level_ice_and_bundle() -> None:
    offer = parse_offer(OFFER)
    assert offer.audio_direction == "sendonly"
    assert (offer.ice_ufrag, offer.ice_pwd) == ("sess", "sessionpassword0123456789")
    assert offer.transport_mid == "video0"  # candidates go to the BUNDLE's first m-line
