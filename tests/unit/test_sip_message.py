"""SIP message parsing and framing, on messages recorded from baresip and sipp."""

from __future__ import annotations

import pytest

from omni_rtc.sip.headers import CSeq, NameAddr, SipUri, Via, parse_auth, split_commas
from omni_rtc.sip.message import ParseError, Request, Response, StreamFramer, can_answer, parse
from tests.sip_unit import FIXTURES, fixture


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.sip")), ids=lambda p: p.stem)
def test_recorded_requests_parse_and_round_trip(path) -> None:  # type: ignore[no-untyped-def]
    data = path.read_bytes()
    msg = parse(data)
    assert isinstance(msg, Request)
    assert msg.method == path.stem.split("-")[1].upper()
    assert msg.cseq().method == msg.method
    assert msg.top_via().branch
    assert msg.top_via().branch.startswith("z9hG4bK")
    again = parse(msg.serialize())
    assert isinstance(again, Request)
    assert again.headers.items == msg.headers.items
    assert again.body == msg.body


def test_baresip_invite_fields() -> None:
    msg = parse(fixture("baresip-invite"))
    assert isinstance(msg, Request)
    assert msg.uri == "sip:bot@10.77.0.1:5060"
    assert msg.top_via().params == {"branch": msg.top_via().branch, "rport": None}
    assert msg.from_().tag
    assert msg.to().tag is None
    assert msg.content_type() == "application/sdp"
    assert msg.body.startswith(b"v=0")
    assert len(msg.body) == int(msg.headers.get("Content-Length") or 0)
    assert "INFO" in msg.headers.get_all("Allow")


def test_compact_forms_folding_and_multi_valued_headers() -> None:
    data = (
        b"OPTIONS sip:bot@example.org SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa, SIP/2.0/TCP [2001:db8::1]:5062"
        b";branch=z9hG4bKb\r\n"
        b"v: SIP/2.0/UDP proxy.example.org;branch=z9hG4bKc\r\n"
        b'f: "Alice, the caller" <sip:alice@example.org>;tag=1\r\n'
        b"t: sip:bot@example.org\r\n"
        b"i: abc@10.0.0.1\r\n"
        b"CSeq: 7 OPTIONS\r\n"
        b"Subject: a long\r\n"
        b"   folded subject\r\n"
        b"m: <sip:a@10.0.0.1>;q=0.5, <sip:b@10.0.0.1>\r\n"
        b"l: 0\r\n\r\n"
    )
    msg = parse(data)
    assert isinstance(msg, Request)
    assert [v.host for v in msg.vias()] == ["10.0.0.1", "[2001:db8::1]", "proxy.example.org"]
    assert msg.vias()[1].port == 5062
    assert msg.vias()[1].transport == "TCP"
    assert msg.from_().display == "Alice, the caller"
    assert msg.from_().tag == "1"
    assert msg.to().uri == "sip:bot@example.org"
    assert msg.call_id == "abc@10.0.0.1"
    assert msg.headers.get("Subject") == "a long folded subject"
    assert len(msg.headers.get_all("Contact")) == 2
    assert msg.cseq() == CSeq(7, "OPTIONS")


def test_response_parses() -> None:
    data = (
        b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n"
        b'WWW-Authenticate: Digest realm="r", nonce="n, with comma", qop="auth,auth-int"\r\n'
        b"Content-Length: 0\r\n\r\n"
    )
    msg = parse(data)
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (401, "Unauthorized")
    scheme, params = parse_auth(msg.headers.get("WWW-Authenticate") or "")
    assert scheme == "digest"
    assert params == {"realm": "r", "nonce": "n, with comma", "qop": "auth,auth-int"}


@pytest.mark.parametrize(
    ("mutation", "answerable"),
    [
        ((b"CSeq: 27936 INVITE", b"CSeq: 27936 BYE"), True),
        ((b"Content-Length: 319", b"Content-Length: 900"), True),
        ((b"Content-Length: 319", b"Content-Length: -1"), True),
        ((b"From: <sip:caller@10.77.0.2:5070>", b"From: <sip:caller@10.77.0.2:5070"), True),
        ((b"Max-Forwards: 70", b"Max-Forwards: lots"), True),
        ((b"Via: SIP/2.0/UDP 10.77.0.2:5070", b"Via: HTTP/1.1 10.77.0.2:5070"), False),
        ((b"CSeq: 27936 INVITE", b"CSeq: many INVITE"), False),
        ((b"sip:bot@10.77.0.1:5060 SIP/2.0", b"sip:bot@10.77.0.1:5060 SIP/3.0"), False),
        ((b"User-Agent: baresip", b"User-Agent baresip"), True),
        ((b"Contact: <", b'Contact: "<'), True),  # found by hypothesis
    ],
)
def test_malformed_input_is_a_clean_parse_error(
    mutation: tuple[bytes, bytes], answerable: bool
) -> None:
    data = fixture("baresip-invite").replace(*mutation)
    assert data != fixture("baresip-invite")
    with pytest.raises(ParseError) as info:
        parse(data)
    partial = info.value.partial
    assert (partial is not None and can_answer(partial)) is answerable


def test_stream_framer_splits_on_content_length() -> None:
    invite, ack = fixture("baresip-invite"), fixture("baresip-ack")
    stream = b"\r\n\r\n" + invite + ack + b"\r\n"
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(0, len(stream), 37):
        out += framer.feed(stream[i : i + 37])
    assert out == [invite, ack]
    with pytest.raises(ParseError):
        StreamFramer().feed(b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n")
    with pytest.raises(ParseError):
        StreamFramer(max_bytes=1000).feed(b"X" * 2000)
    with pytest.raises(ParseError):
        parse(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\n\r\n", stream=True)


def test_uri_and_address_helpers() -> None:
    uri = SipUri.parse("sip:user:pw@[2001:db8::2]:5080;transport=tcp;lr?subject=x")
    assert (uri.user, uri.password, uri.host, uri.port) == ("user", "pw", "[2001:db8::2]", 5080)
    assert uri.transport == "tcp"
    assert str(uri) == "sip:user:pw@[2001:db8::2]:5080;transport=tcp;lr?subject=x"
    addr = NameAddr.parse('"Bob" <sip:bob@example.org;transport=udp>;tag=abc;expires=60')
    assert addr.uri == "sip:bob@example.org;transport=udp"
    assert addr.tag == "abc"
    assert str(NameAddr.parse(str(addr))) == str(addr)
    bare = NameAddr.parse("sip:bob@example.org;tag=9")
    assert bare.uri == "sip:bob@example.org"
    assert bare.tag == "9"
    via = Via.parse("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport")
    via.params["rport"] = "4000"
    assert str(via) == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport=4000"
    assert split_commas('a, "b,c" <sip:x>, <sip:y,z>') == ["a", '"b,c" <sip:x>', "<sip:y,z>"]
