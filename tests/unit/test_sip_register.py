"""The REGISTER client, sans-I/O, against a registrar made of our own Authenticator."""

from __future__ import annotations

import pytest

from omni_rtc.sip.auth import Authenticator, Verdict
from omni_rtc.sip.message import Request, parse
from omni_rtc.sip.register import RegisterTarget, Registration
from omni_rtc.sip.transaction import Peer, Send
from omni_rtc.sip.uas import UserAgent

REGISTRAR = Peer("UDP", "10.77.0.2", 5090, "10.77.0.1", 5060)


def sent_register(ua: UserAgent) -> Request:
    (out,) = [o for o in ua.drain() if isinstance(o, Send)]
    msg = parse(out.data)
    assert isinstance(msg, Request)
    assert msg.method == "REGISTER"
    return msg


def reply(ua: UserAgent, req: Request, status: int, now: float, extra: str = "") -> None:
    lines = [f"SIP/2.0 {status} X"] + [
        f"{n}: {v}" for n, v in req.headers.items if n in ("Via", "From", "To", "Call-ID", "CSeq")
    ]
    data = ("\r\n".join(lines) + "\r\n" + extra + "Content-Length: 0\r\n\r\n").encode()
    ua.receive(data, REGISTRAR, now)


def test_target_parsing_hides_the_password() -> None:
    target = RegisterTarget.parse("sip:1001:s3cret@pbx.example.org:5080")
    assert (target.user, target.password, target.host, target.port) == (
        "1001", "s3cret", "pbx.example.org", 5080,
    )  # fmt: skip
    assert "s3cret" not in repr(target)
    with pytest.raises(ValueError, match="sip:USER:PASSWORD@REGISTRAR"):
        RegisterTarget.parse("pbx.example.org")


def test_register_challenge_refresh_backoff_and_unregister() -> None:
    registrar = Authenticator(username="1001", password="s3cret", realm="pbx")
    ua = UserAgent(Authenticator(allow=["10.0.0.0/8"]))
    reg = Registration(ua, RegisterTarget("1001", "s3cret", "10.77.0.2", 5090), REGISTRAR,
                       expires=120)  # fmt: skip
    reg.start(0.0)
    first = sent_register(ua)
    assert first.uri == "sip:10.77.0.2:5090"
    assert first.headers.get("Expires") == "120"
    assert first.headers.get("Contact") == "<sip:1001@10.77.0.1:5060>"
    challenge = registrar.check(source="10.77.0.1", method="REGISTER", authorization=None, now=0)
    extra = "".join(f"WWW-Authenticate: {c}\r\n" for c in challenge.challenges)
    reply(ua, first, 401, 0.1, extra)
    second = sent_register(ua)
    assert second.cseq().number == first.cseq().number + 1
    assert second.call_id == first.call_id
    verdict = registrar.check(
        source="10.77.0.1", method="REGISTER",
        authorization=second.headers.get("Authorization"), now=0.2,
    )  # fmt: skip
    assert verdict.verdict is Verdict.ALLOWED
    reply(ua, second, 200, 0.2, "Contact: <sip:1001@10.77.0.1:5060>;expires=60\r\n")
    assert reg.state == "registered"
    assert reg.granted == 60
    assert ua.next_deadline() == pytest.approx(0.2 + 30)  # half the granted time
    ua.handle_timers(30.3)
    refresh = sent_register(ua)
    # the registrar is down: retries back off 5 s, 10 s, ...
    ua.handle_timers(30.3 + 32.1)  # Timer F
    assert reg.state == "retrying"
    retry_at = ua.next_deadline()
    assert retry_at is not None
    assert retry_at - (30.3 + 32.1) == pytest.approx(5.0, abs=0.6)
    assert refresh.method == "REGISTER"
    ua.drain()
    ua.handle_timers(retry_at)
    third = sent_register(ua)
    reply(ua, third, 503, retry_at + 0.1)
    assert reg.failures == 2
    later = ua.next_deadline()
    assert later is not None
    assert later - (retry_at + 0.1) == pytest.approx(10.0, abs=0.6)
    ua.handle_timers(later)
    fourth = sent_register(ua)
    reply(ua, fourth, 200, later + 0.1, "Expires: 300\r\n")
    assert reg.state == "registered"
    assert reg.granted == 300
    reg.stop(later + 1)
    bye = sent_register(ua)
    assert bye.headers.get("Expires") == "0"
    reply(ua, bye, 200, later + 1.1)
    assert reg.state == "stopped"
    ua.handle_timers(later + 1000)
    assert [o for o in ua.drain() if isinstance(o, Send)] == []
