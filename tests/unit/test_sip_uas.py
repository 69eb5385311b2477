"""The sans-I/O user agent server, driven by requests recorded from baresip and sipp."""

from __future__ import annotations

import re

import pytest

from omni_rtc.sip.auth import answer_challenge
from omni_rtc.sip.message import Request, parse
from omni_rtc.sip.sdp import PCMA, PCMU, SessionDescription
from omni_rtc.sip.transaction import T1, T2, TIMEOUT, Peer
from omni_rtc.sip.uas import CallConfirmed, CallEnded, CallOffered, MediaChanged, UserAgent
from tests.sip_unit import (
    CALLER,
    events,
    feed,
    fixture,
    make_ua,
    responses,
    sdp,
    sends,
    set_header,
    statuses,
    with_body,
    with_to_tag,
)


def offered(ua: UserAgent, invite: bytes | None = None) -> CallOffered:
    out = feed(ua, invite or fixture("baresip-invite"))
    assert statuses(out) == [100]
    (event,) = events(out)
    assert isinstance(event, CallOffered)
    return event


def answered(ua: UserAgent) -> tuple[str, str]:
    """An answered, ACKed baresip call: (call id, our To tag)."""
    call = offered(ua).call
    assert ua.accept(call, 40000, 0.0)
    (ok,) = responses(ua.drain())
    tag = ok.to().tag or ""
    out = feed(ua, with_to_tag(fixture("baresip-ack"), tag), 0.1)
    assert isinstance(events(out)[0], CallConfirmed)
    return call, tag


def in_dialog(tag: str, method: str, cseq: int, body: bytes = b"", branch: str = "x") -> bytes:
    data = with_to_tag(fixture("baresip-invite"), tag)
    data = data.replace(b"INVITE sip:bot", method.encode() + b" sip:bot", 1)
    data = set_header(data, "CSeq", f"{cseq} {method}")
    data = re.sub(rb"branch=[^;\r]+", f"branch=z9hG4bK{branch}{cseq}".encode(), data, count=1)
    return with_body(data, body)


def test_invite_with_offer_is_answered_in_the_200() -> None:
    ua = make_ua()
    event = offered(ua)
    assert event.choice is not None
    assert event.choice.codec == PCMU
    assert event.choice.dtmf_payload_type == 101
    assert (event.choice.remote_address, event.choice.remote_port) == ("10.77.0.2", 3376)
    assert event.caller == "sip:caller@10.77.0.2:5070"
    assert ua.accept(event.call, 40000, 0.0)
    ((ok, peer),) = sends(ua.drain())
    assert ok.status == 200  # type: ignore[union-attr]
    assert (peer.host, peer.port) == ("10.77.0.2", 5070)
    assert ok.to().tag
    via = ok.top_via()
    assert via.params["rport"] == "5070"
    assert via.params["received"] == "10.77.0.2"
    assert ok.headers.get("Contact") == "<sip:omni-rtc@10.77.0.1:5060>"
    answer = SessionDescription.parse(ok.body)
    audio = answer.media[0]
    assert (audio.port, audio.formats) == (40000, ["0", "101"])
    assert answer.connection == "10.77.0.1"
    assert audio.direction == "sendrecv"


def test_retransmitted_invite_never_makes_a_second_call() -> None:
    ua = make_ua()
    call = offered(ua).call
    again = feed(ua, fixture("baresip-invite"), 0.3)
    assert statuses(again) == [100]
    assert events(again) == []
    ua.accept(call, 40000, 0.4)
    ua.drain()
    after = feed(ua, fixture("baresip-invite"), 0.6)
    assert statuses(after) == [200]
    assert events(after) == []
    assert ua.calls == [call]


def test_200_is_retransmitted_t1_doubling_to_t2_until_ack() -> None:
    ua = make_ua()
    call = offered(ua).call
    ua.accept(call, 40000, 0.0)
    ua.drain()
    times = []
    now = 0.0
    while len(times) < 7:
        deadline = ua.next_deadline()
        assert deadline is not None
        now = deadline
        ua.handle_timers(now)
        if statuses(ua.drain()) == [200]:
            times.append(now)
    gaps = [round(b - a, 3) for a, b in zip([0.0, *times], times, strict=False)]
    assert gaps == [T1, 2 * T1, 4 * T1, T2, T2, T2, T2]
    tag = parse(ua.dialog(call).invite_tx.last or b"").to().tag  # type: ignore[union-attr]
    feed(ua, with_to_tag(fixture("baresip-ack"), tag or ""), now)
    ua.handle_timers(now + 10)
    assert statuses(ua.drain()) == []


def test_no_ack_after_64_t1_ends_the_call_with_a_bye() -> None:
    ua = make_ua()
    call = offered(ua).call
    ua.accept(call, 40000, 0.0)
    ua.drain()
    ua.handle_timers(TIMEOUT + 0.01)
    out = ua.drain()
    byes = [m for m, _ in sends(out) if isinstance(m, Request) and m.method == "BYE"]
    assert len(byes) == 1
    assert [e for e in events(out) if isinstance(e, CallEnded)] == [CallEnded(call, "no ACK")]
    assert ua.calls == []


def test_remote_bye_ends_the_call() -> None:
    ua = make_ua()
    call, tag = answered(ua)
    out = feed(ua, with_to_tag(fixture("baresip-bye"), tag), 1.0)
    assert statuses(out) == [200]
    assert events(out) == [CallEnded(call, "remote BYE")]
    assert ua.calls == []
    # a retransmitted BYE is answered from the transaction, no second end
    again = feed(ua, with_to_tag(fixture("baresip-bye"), tag), 1.5)
    assert statuses(again) == [200]
    assert events(again) == []


def test_we_hang_up_with_a_retransmitted_bye() -> None:
    ua = make_ua()
    call, tag = answered(ua)
    ua.hangup(call, "model session ended", 1.0)
    out = ua.drain()
    ((bye, peer),) = sends(out)
    assert isinstance(bye, Request)
    assert bye.method == "BYE"
    assert bye.uri == "sip:caller-0x56055f7ba310@10.77.0.2:5070"
    assert bye.from_().tag == tag
    assert bye.to().tag == "3b671d7496e7b1c4"
    assert bye.cseq().method == "BYE"
    assert (peer.host, peer.port) == ("10.77.0.2", 5070)
    assert events(out) == [CallEnded(call, "model session ended")]
    ua.handle_timers(1.0 + T1)
    assert [m.method for m, _ in sends(ua.drain())] == ["BYE"]  # type: ignore[union-attr]
    ok = (
        f"SIP/2.0 200 OK\r\nVia: {bye.headers.get('Via')}\r\nFrom: {bye.headers.get('From')}\r\n"
        f"To: {bye.headers.get('To')}\r\nCall-ID: {bye.call_id}\r\nCSeq: {bye.headers.get('CSeq')}"
        "\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    feed(ua, ok, 1.6)
    assert ua.idle() is False  # server transactions linger to absorb retransmissions
    ua.handle_timers(100.0)
    assert sends(ua.drain()) == []
    assert ua.idle()


def test_cancel_gets_200_and_the_invite_487() -> None:
    ua = make_ua()
    call = offered(ua, fixture("sipp-invite")).call
    out = feed(ua, fixture("sipp-cancel"), 0.5)
    got = responses(out)
    assert [(r.status, r.cseq().method) for r in got] == [(200, "CANCEL"), (487, "INVITE")]
    assert events(out) == [CallEnded(call, "CANCEL")]
    assert not ua.accept(call, 40000, 0.6)
    # the ACK for the 487 stops its retransmission
    feed(ua, fixture("sipp-ack"), 0.6)
    ua.handle_timers(5.0)
    assert statuses(ua.drain()) == []


def test_cancel_without_a_transaction_is_481() -> None:
    ua = make_ua()
    assert statuses(feed(ua, fixture("sipp-cancel"))) == [481]


def test_options_keepalive() -> None:
    ua = make_ua()
    (ok,) = responses(feed(ua, fixture("sipp-options")))
    assert ok.status == 200
    assert "INVITE" in ok.headers.get_all("Allow")
    assert "BYE" in ok.headers.get_all("Allow")
    assert ok.headers.get("Accept") == "application/sdp"


@pytest.mark.parametrize(
    ("direction", "address", "answer", "sending"),
    [
        ("sendonly", "10.77.0.2", "recvonly", False),
        ("inactive", "10.77.0.2", "inactive", False),
        ("sendrecv", "0.0.0.0", "sendrecv", False),
        ("recvonly", "10.77.0.2", "sendonly", True),
    ],
)
def test_reinvite_hold_and_resume(direction: str, address: str, answer: str, sending: bool) -> None:
    ua = make_ua()
    _call, tag = answered(ua)
    out = feed(ua, in_dialog(tag, "INVITE", 27937, sdp(direction, address=address)), 1.0)
    (ok,) = responses(out)
    assert ok.status == 200
    held = SessionDescription.parse(ok.body)
    assert held.media[0].direction == answer
    assert held.origin.split()[2] == "2"
    (change,) = events(out)
    assert isinstance(change, MediaChanged)
    assert change.choice.sending is sending
    feed(ua, in_dialog(tag, "ACK", 27937, branch="ack"), 1.1)
    out = feed(ua, in_dialog(tag, "INVITE", 27938, sdp("sendrecv")), 2.0)
    (ok,) = responses(out)
    resumed = SessionDescription.parse(ok.body)
    assert resumed.media[0].direction == "sendrecv"
    assert resumed.origin.split()[2] == "3"
    assert resumed.origin.split()[1] == held.origin.split()[1]
    (change,) = events(out)
    assert isinstance(change, MediaChanged)
    assert change.choice.sending


def test_reinvite_codec_change_and_no_common_codec() -> None:
    ua = make_ua()
    _, tag = answered(ua)
    out = feed(ua, in_dialog(tag, "INVITE", 27937, sdp(formats="8 101")), 1.0)
    (change,) = events(out)
    assert isinstance(change, MediaChanged)
    assert change.choice.codec == PCMA
    feed(ua, in_dialog(tag, "ACK", 27937, branch="ack"), 1.1)
    out = feed(ua, in_dialog(tag, "INVITE", 27938, sdp(formats="18")), 2.0)
    assert statuses(out) == [488]
    assert events(out) == []
    assert len(ua.calls) == 1


def test_invite_without_sdp_gets_our_offer_and_the_answer_comes_in_the_ack() -> None:
    ua = make_ua()
    event = offered(ua, with_body(fixture("baresip-invite"), b""))
    assert event.choice is None
    ua.accept(event.call, 40000, 0.0)
    (ok,) = responses(ua.drain())
    offer = SessionDescription.parse(ok.body)
    assert offer.media[0].formats == ["111", "9", "0", "8", "101"]
    assert offer.media[0].rtpmap[9] == ("G722", 8000, 1)
    ack = with_body(with_to_tag(fixture("baresip-ack"), ok.to().tag or ""), sdp(formats="8 101"))
    (confirmed,) = events(feed(ua, ack, 0.1))
    assert isinstance(confirmed, CallConfirmed)
    assert confirmed.choice.codec == PCMA


@pytest.mark.parametrize(
    ("change", "status"),
    [
        (
            lambda d: d.replace(b"INVITE sip:", b"FOO sip:", 1).replace(b"INVITE\r\n", b"FOO\r\n"),
            501,
        ),
        (
            lambda d: d.replace(b"INVITE sip:", b"SUBSCRIBE sip:", 1).replace(
                b"27936 INVITE", b"27936 SUBSCRIBE"
            ),
            405,
        ),
        (lambda d: set_header(d, "Require", "100rel"), 420),
        (lambda d: with_body(d, sdp(formats="18 3")), 488),
        (lambda d: with_body(d, b"hello", "text/plain"), 415),
        (lambda d: with_body(d, b"v=0\r\nm=audio x RTP/AVP 0\r\n"), 488),
        (lambda d: set_header(d, "Max-Forwards", "0"), 483),
        (lambda d: d.replace(b"27936 INVITE", b"27936 BYE"), 400),
        (
            lambda d: with_to_tag(
                d.replace(b"INVITE sip:", b"BYE sip:", 1).replace(b"27936 INVITE", b"27936 BYE"),
                "unknown",
            ),
            481,
        ),
    ],
)
def test_unwelcome_requests_get_their_status(change, status: int) -> None:  # type: ignore[no-untyped-def]
    ua = make_ua()
    out = feed(ua, change(fixture("baresip-invite")))
    assert statuses(out)[-1] == status
    assert not [e for e in events(out) if isinstance(e, CallOffered)]


def test_unanswerable_garbage_is_dropped() -> None:
    ua = make_ua()
    for junk in (
        b"",
        b"\r\n\r\n",
        b"hello\r\n\r\n",
        b"\xff\xfe" * 100,
        fixture("baresip-invite")[:40],
    ):
        assert feed(ua, junk) == []


def test_responses_follow_via_without_rport() -> None:
    ua = make_ua()
    data = fixture("sipp-options").replace(b";branch=", b";foo=1;branch=")
    out = feed(ua, data, peer=Peer("UDP", "10.77.0.2", 40001, "10.77.0.1", 5060))
    ((ok, peer),) = sends(out)
    assert (peer.host, peer.port) == ("10.77.0.2", 5080)
    assert "received" not in ok.top_via().params


def test_merged_invite_with_another_branch_is_482() -> None:
    ua = make_ua()
    offered(ua)
    other = re.sub(rb"branch=[^;\r]+", b"branch=z9hG4bKother", fixture("baresip-invite"), count=1)
    assert statuses(feed(ua, other)) == [482]


def test_busy_reject_with_retry_after() -> None:
    ua = make_ua()
    call = offered(ua).call
    ua.reject(call, 503, 0.0, retry_after=7)
    (busy,) = responses(ua.drain())
    assert busy.status == 503
    assert busy.headers.get("Retry-After") == "7"
    assert ua.calls == []


def test_digest_challenge_then_success() -> None:
    ua = make_ua(allow=[], username="alice", password="pw-123")
    (challenge,) = responses(feed(ua, fixture("baresip-invite")))
    assert challenge.status == 401
    offers = challenge.headers.get_all("WWW-Authenticate")
    assert ["MD5" in offers[0], "SHA-256" in offers[1]] == [True, True]
    feed(ua, with_to_tag(fixture("baresip-ack"), challenge.to().tag or ""))
    for algorithm_offer, cseq in ((offers[1], 27937), (offers[0], 27938)):
        auth = answer_challenge(
            algorithm_offer, username="alice", password="pw-123", method="INVITE",
            uri="sip:bot@10.77.0.1:5060", cnonce="abc",
        )  # fmt: skip
        retry = set_header(fixture("baresip-invite"), "Authorization", auth)
        retry = set_header(retry, "CSeq", f"{cseq} INVITE")
        retry = re.sub(rb"branch=[^;\r]+", f"branch=z9hG4bK{cseq}".encode(), retry, count=1)
        retry = set_header(retry, "Call-ID", f"call-{cseq}")
        out = feed(ua, retry, 1.0)
        assert statuses(out) == [100]
        assert isinstance(events(out)[0], CallOffered)


def test_wrong_password_and_unknown_source_are_forbidden() -> None:
    ua = make_ua(allow=[], username="alice", password="pw-123")
    (challenge,) = responses(feed(ua, fixture("baresip-invite")))
    auth = answer_challenge(
        challenge.headers.get_all("WWW-Authenticate")[0], username="alice", password="guess",
        method="INVITE", uri="sip:bot@10.77.0.1:5060", cnonce="abc",
    )  # fmt: skip
    retry = set_header(fixture("sipp-invite"), "Authorization", auth)
    assert statuses(feed(ua, retry, 1.0)) == [403]
    only_others = make_ua(allow=["192.0.2.0/24"])
    assert statuses(feed(only_others, fixture("baresip-invite"))) == [403]
    assert statuses(feed(only_others, fixture("sipp-options"))) == [403]
    assert CALLER.host == "10.77.0.2"


def test_challenges_are_stateless_towards_unverified_sources() -> None:
    ua = make_ua(allow=[], username="alice", password="pw-123")
    assert statuses(feed(ua, fixture("baresip-invite"))) == [401]
    assert statuses(feed(ua, fixture("baresip-invite"), 0.5)) == [401]  # a retransmission
    ua.handle_timers(40.0)
    assert ua.drain() == []  # we never retransmit towards an unverified source
    assert ua.idle()


def test_record_route_is_copied_and_our_bye_follows_the_route_set() -> None:
    ua = make_ua()
    invite = set_header(fixture("baresip-invite"), "Record-Route", "<sip:10.77.0.9:5070;lr>")
    event = offered(ua, invite)
    ua.accept(event.call, 40000, 0.0)
    (ok,) = responses(ua.drain())
    assert ok.headers.get("Record-Route") == "<sip:10.77.0.9:5070;lr>"
    feed(ua, with_to_tag(fixture("baresip-ack"), ok.to().tag or ""), 0.1)
    ua.hangup(event.call, "done", 1.0)
    ((bye, peer),) = sends(ua.drain())
    assert bye.headers.get("Route") == "<sip:10.77.0.9:5070;lr>"
    assert (peer.host, peer.port) == ("10.77.0.9", 5070)


def test_public_address_goes_into_contact_and_sdp() -> None:
    ua = UserAgent(make_ua().auth, public_address="203.0.113.7")
    event = offered(ua)
    ua.accept(event.call, 40000, 0.0)
    (ok,) = responses(ua.drain())
    assert ok.headers.get("Contact") == "<sip:omni-rtc@203.0.113.7:5060>"
    assert SessionDescription.parse(ok.body).connection == "203.0.113.7"
