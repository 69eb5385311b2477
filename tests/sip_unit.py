"""Helpers for the sans-I/O SIP tests: recorded fixtures, a user agent, parsed output."""

from __future__ import annotations

import re
from pathlib import Path

from omni_rtc.sip.auth import Authenticator
from omni_rtc.sip.message import Request, Response, parse
from omni_rtc.sip.transaction import Peer, Send
from omni_rtc.sip.uas import Output, UserAgent

FIXTURES = Path(__file__).resolve().parent / "sip" / "fixtures"
CALLER = Peer("UDP", "10.77.0.2", 5070, "10.77.0.1", 5060)


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.sip").read_bytes()


def make_ua(**auth: object) -> UserAgent:
    settings: dict[str, object] = {"allow": ["10.77.0.0/24"]}
    settings.update(auth)
    return UserAgent(Authenticator(**settings))  # type: ignore[arg-type]


def feed(ua: UserAgent, data: bytes, now: float = 0.0, peer: Peer = CALLER) -> list[Output]:
    ua.receive(data, peer, now)
    return ua.drain()


def sends(outputs: list[Output]) -> list[tuple[Request | Response, Peer]]:
    return [(parse(o.data), o.peer) for o in outputs if isinstance(o, Send)]


def responses(outputs: list[Output]) -> list[Response]:
    return [m for m, _ in sends(outputs) if isinstance(m, Response)]


def statuses(outputs: list[Output]) -> list[int]:
    return [r.status for r in responses(outputs)]


def events(outputs: list[Output]) -> list[object]:
    return [o for o in outputs if not isinstance(o, Send)]


def set_header(data: bytes, name: str, value: str) -> bytes:
    """Replace (or add) one header line of a recorded message."""
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    key = name.lower().encode() + b":"
    out = [line for line in lines if not line.lower().startswith(key)]
    out.insert(1, f"{name}: {value}".encode())
    return b"\r\n".join(out) + sep + body


def with_to_tag(data: bytes, tag: str) -> bytes:
    def repl(m: re.Match[bytes]) -> bytes:
        line = re.sub(rb";tag=[^;\r]*", b"", m.group(0))
        return line + b";tag=" + tag.encode()

    return re.sub(rb"(?m)^To:[^\r\n]*", repl, data, count=1)


def with_body(data: bytes, body: bytes, content_type: str = "application/sdp") -> bytes:
    head = data.partition(b"\r\n\r\n")[0]
    msg = head + b"\r\n\r\n"
    msg = set_header(msg, "Content-Length", str(len(body)))
    if body:
        msg = set_header(msg, "Content-Type", content_type)
    return msg + body


def sdp(direction: str = "sendrecv", formats: str = "0 101", address: str = "10.77.0.2") -> bytes:
    lines = [
        "v=0", f"o=- 1 2 IN IP4 {address}", "s=-", f"c=IN IP4 {address}", "t=0 0",
        f"m=audio 4000 RTP/AVP {formats}", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:9 G722/8000", "a=rtpmap:96 opus/48000/2",
        "a=rtpmap:101 telephone-event/8000", f"a={direction}",
    ]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n").encode()
