"""WHIP's pure parsing: the offer's ICE details, trickle-ice sdpfrags, Link headers.

No I/O: a :class:`WhipError` names what is wrong, and the endpoint turns it into a 4xx.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from aiortc import RTCIceCandidate
from aiortc.sdp import SessionDescription

from omni_rtc.config import IceServer


class WhipError(Exception):
    """A request we refuse with ``status`` and this text."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def link_header(server: IceServer) -> str:
    """``<turn:host:3478?transport=udp>; rel="ice-server"; username=...`` (RFC 9725 4.6)."""
    value = f'<{server.urls}>; rel="ice-server"'
    if server.username is not None and server.credential is not None:
        value += (
            f"; username={_quote(server.username)}; credential={_quote(server.credential)}"
            '; credential-type="password"'
        )
    return value


@dataclass(frozen=True)
class Offer:
    audio_direction: str
    ice_ufrag: str | None
    ice_pwd: str | None
    transport_mid: str | None


def parse_offer(sdp: str) -> Offer:
    """Check an offer before anything is opened for it (aiortc checks the rest)."""
    if not sdp.startswith("v=0"):
        raise WhipError(400, "the body is not an SDP offer (it must start with v=0)")
    try:
        description = SessionDescription.parse(sdp)
    except Exception:  # aiortc's parser raises many kinds of errors on garbage
        raise WhipError(400, "the SDP offer could not be parsed") from None
    audio = [m for m in description.media if m.kind == "audio"]
    if not audio:
        raise WhipError(400, "the offer has no audio: the model needs to hear the caller")
    sending = [m for m in audio if m.direction in (None, "sendrecv", "sendonly")]
    if not sending:
        raise WhipError(400, "the offer's audio is not sent (recvonly or inactive)")
    if not any(m.dtls and m.dtls.fingerprints for m in description.media):
        raise WhipError(400, "the offer has no DTLS fingerprint")
    first = description.media[0]
    if first.ice is None or not first.ice.usernameFragment or not first.ice.password:
        raise WhipError(400, "the offer has no ICE credentials (a=ice-ufrag, a=ice-pwd)")
    bundle = next((g for g in description.group if g.semantic == "BUNDLE" and g.items), None)
    return Offer(
        audio_direction=sending[0].direction or "sendrecv",
        ice_ufrag=first.ice.usernameFragment,
        ice_pwd=first.ice.password,
        transport_mid=str(bundle.items[0]) if bundle else first.rtp.muxId,
    )


@dataclass
class SdpFragment:
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    candidates: list[RTCIceCandidate] = field(default_factory=list)
    end_of_candidates: bool = False


_SDP_LINE = re.compile(r"^[a-z]=")
_FOUNDATION = re.compile(r"^[A-Za-z0-9+/]{1,32}$")
_MDNS = re.compile(r"^[A-Za-z0-9-]{1,63}\.local$")
CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")


def parse_sdpfrag(text: str) -> SdpFragment:
    """An ``application/trickle-ice-sdpfrag`` body (RFC 8840): credentials and candidates."""
    fragment = SdpFragment()
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        if not _SDP_LINE.match(line):
            raise WhipError(400, f"sdpfrag line {number} is not an SDP line: {line[:60]!r}")
        if not line.startswith("a="):
            continue  # m=, c=, ... only frame the attributes
        name, _, value = line[2:].partition(":")
        if name == "ice-ufrag":
            fragment.ice_ufrag = value.strip()
        elif name == "ice-pwd":
            fragment.ice_pwd = value.strip()
        elif name == "end-of-candidates":
            fragment.end_of_candidates = True
        elif name == "candidate":
            try:
                fragment.candidates.append(parse_candidate(value))
            except ValueError as exc:
                raise WhipError(400, f"sdpfrag line {number}: {exc}") from None
    return fragment


def parse_candidate(value: str) -> RTCIceCandidate:
    """``foundation component transport priority address port typ type [extensions]``."""
    bits = value.split()
    if len(bits) < 8 or bits[6] != "typ" or len(bits) % 2:
        raise ValueError("malformed candidate (RFC 8839: foundation component transport ...)")
    foundation, component, protocol, priority, address, port, _, kind = bits[:8]
    if not _FOUNDATION.match(foundation):
        raise ValueError("bad candidate foundation")
    protocol = protocol.lower()
    if protocol not in ("udp", "tcp"):
        raise ValueError("candidate transport must be udp or tcp")
    if kind not in CANDIDATE_TYPES:
        raise ValueError(f"candidate type must be one of: {', '.join(CANDIDATE_TYPES)}")
    candidate = RTCIceCandidate(
        component=_number(component, 1, 256, "component"),
        foundation=foundation,
        ip=_address(address),
        port=_number(port, 0, 65535, "port"),
        priority=_number(priority, 1, 2**32 - 1, "priority"),
        protocol=protocol,
        type=kind,
    )
    extensions = dict(zip(bits[8::2], bits[9::2], strict=True))
    if "raddr" in extensions:
        candidate.relatedAddress = _address(extensions["raddr"])
    if "rport" in extensions:
        candidate.relatedPort = _number(extensions["rport"], 0, 65535, "rport")
    if "tcptype" in extensions:
        candidate.tcpType = extensions["tcptype"]
    return candidate


def _number(text: str, low: int, high: int, what: str) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"candidate {what} must be a number from {low} to {high}")
    return int(text)


def _address(text: str) -> str:
    if _MDNS.match(text):
        return text
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError("candidate address must be an IP address or an mDNS .local name") from None
