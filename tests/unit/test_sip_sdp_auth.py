"""SDP offer/answer and digest authentication."""

from __future__ import annotations

import pytest

from omni_rtc.sip.auth import (
    OPEN_PORT_WARNING,
    Authenticator,
    Verdict,
    answer_challenge,
    pick_challenge,
)
from omni_rtc.sip.sdp import (
    G722,
    OPUS,
    PCMA,
    PCMU,
    LocalSession,
    SdpError,
    SessionDescription,
    negotiate,
)
from tests.sip_unit import fixture, sdp


def test_caller_preference_wins() -> None:
    assert negotiate(SessionDescription.parse(sdp(formats="8 0 101"))).codec == PCMA
    assert negotiate(SessionDescription.parse(sdp(formats="9 0"))).codec == G722
    choice = negotiate(SessionDescription.parse(sdp(formats="96 0 101")))
    assert choice.codec == OPUS
    assert choice.payload_type == 96
    assert choice.dtmf_payload_type == 101
    assert negotiate(SessionDescription.parse(sdp(formats="18 0"))).codec == PCMU
    # a re-INVITE keeps the current codec when it is still offered
    assert negotiate(SessionDescription.parse(sdp(formats="8 0")), prefer=PCMU).codec == PCMU


def test_g722_is_16khz_audio_on_an_8khz_clock() -> None:
    assert (G722.clock_rate, G722.audio_rate, G722.static_pt) == (8000, 16000, 9)
    assert (OPUS.clock_rate, OPUS.audio_rate) == (48000, 48000)


def test_static_payload_types_without_rtpmap() -> None:
    body = (
        b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"
        b"m=audio 5000 RTP/AVP 8\r\n"
    )
    choice = negotiate(SessionDescription.parse(body))
    assert choice.codec == PCMA
    assert choice.dtmf_payload_type is None
    assert (choice.remote_address, choice.remote_port) == ("1.2.3.4", 5000)


@pytest.mark.parametrize(
    "body",
    [
        sdp(formats="18 3"),
        sdp().replace(b"a=sendrecv", b"a=ptime:80"),
        sdp().replace(b"RTP/AVP", b"RTP/SAVP"),
        sdp().replace(b"c=IN IP4 10.77.0.2\r\n", b""),
        sdp().replace(b"m=audio", b"m=video"),
    ],
)
def test_unusable_offers(body: bytes) -> None:
    with pytest.raises(SdpError):
        negotiate(SessionDescription.parse(body))


@pytest.mark.parametrize("ptime", [10, 20, 30, 60])
def test_ptime_range_accepted(ptime: int) -> None:
    body = sdp().replace(b"a=sendrecv", f"a=ptime:{ptime}".encode())
    assert negotiate(SessionDescription.parse(body)).ptime == ptime


def test_answer_rejects_other_streams_and_bumps_the_version() -> None:
    offer_body = sdp() + b"m=video 5002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"
    offer = SessionDescription.parse(offer_body)
    choice = negotiate(offer)
    session = LocalSession("203.0.113.5", 42)
    first = SessionDescription.parse(session.answer(offer, choice, 40000))
    second = SessionDescription.parse(session.answer(offer, choice, 40000))
    assert [m.port for m in first.media] == [40000, 0]
    assert first.connection == "203.0.113.5"
    assert first.origin.split()[1:3] == ["42", "1"]
    assert second.origin.split()[2] == "2"
    assert first.media[0].rtpmap == {0: ("PCMU", 8000, 1), 101: ("telephone-event", 8000, 1)}


def test_baresip_offer_negotiates() -> None:
    body = fixture("baresip-invite").partition(b"\r\n\r\n")[2]
    choice = negotiate(SessionDescription.parse(body))
    assert (choice.codec, choice.direction, choice.ptime) == (PCMU, "sendrecv", 20)


# ------------------------------------------------------------------ auth


def test_listener_refuses_to_start_open() -> None:
    with pytest.raises(ValueError, match="scanners") as info:
        Authenticator()
    assert str(info.value) == OPEN_PORT_WARNING
    with pytest.raises(ValueError, match="together"):
        Authenticator(username="a")


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_digest_round_trip(algorithm: str) -> None:
    auth = Authenticator(username="alice", password="pw", secret=b"k" * 32)
    decision = auth.check(source="198.51.100.7", method="INVITE", authorization=None, now=100.0)
    assert decision.verdict is Verdict.CHALLENGE
    challenge = next(c for c in decision.challenges if algorithm in c)
    header = answer_challenge(
        challenge, username="alice", password="pw", method="INVITE", uri="sip:bot@x", cnonce="c"
    )
    ok = auth.check(source="198.51.100.7", method="INVITE", authorization=header, now=110.0)
    assert ok.verdict is Verdict.ALLOWED
    stale = auth.check(source="198.51.100.7", method="INVITE", authorization=header, now=1000.0)
    assert stale.verdict is Verdict.CHALLENGE
    assert "stale=true" in stale.challenges[0]
    wrong = answer_challenge(
        challenge, username="alice", password="nope", method="INVITE", uri="sip:bot@x", cnonce="c"
    )
    bad = auth.check(source="198.51.100.7", method="INVITE", authorization=wrong, now=110.0)
    assert bad.verdict is Verdict.FORBIDDEN


def test_every_nonce_we_issue_is_fresh_when_answered() -> None:
    """Regression: the nonce's stamp went to seconds and back before its MAC was checked,
    and 368 of these 2000 milliseconds came back one short (a sipp login failed in CI)."""
    auth = Authenticator(username="alice", password="pw", secret=b"k" * 32)
    stale = [
        ms
        for ms in range(16_698_000, 16_700_000)
        if auth._nonce_state(auth.make_nonce(ms / 1000), ms / 1000 + 0.5) != "fresh"
    ]
    assert stale == []


def test_forged_nonce_is_rechallenged_and_allow_list_skips_auth() -> None:
    auth = Authenticator(allow=["10.0.0.0/8"], username="alice", password="pw")
    forged = auth.make_nonce(5.0)[:-2] + "AA"
    header = (
        f'Digest username="alice", realm="omni-rtc", nonce="{forged}", uri="sip:x", '
        'response="00", algorithm=MD5'
    )
    decision = auth.check(source="192.0.2.1", method="INVITE", authorization=header, now=6.0)
    assert decision.verdict is Verdict.CHALLENGE
    assert auth.check(source="10.1.2.3", method="INVITE", authorization=None, now=0).verdict is (
        Verdict.ALLOWED
    )


def test_pick_challenge_prefers_sha256() -> None:
    md5 = 'Digest realm="r", nonce="n", algorithm=MD5'
    sha = 'Digest realm="r", nonce="n", algorithm=SHA-256'
    assert pick_challenge([md5, sha]) == sha
    assert pick_challenge(['Basic realm="x"']) is None
