"""One call's dialog state (RFC 3261 section 12) on the UAS side, and its 2xx retransmission."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from omni_rtc.sip.headers import HeaderError, NameAddr, SipUri
from omni_rtc.sip.message import Headers, Request
from omni_rtc.sip.sdp import LocalSession, MediaChoice, SessionDescription
from omni_rtc.sip.transaction import T1, T2, TIMEOUT, Peer, ServerTransaction, Timer, Timers


@dataclass
class Dialog:
    id: str
    """Our handle for the call (unique, safe for logs)."""
    call_id: str
    local_tag: str
    remote_tag: str
    local_header: str
    """The To header of the INVITE with our tag: the From of our requests."""
    remote_header: str
    """The From header of the INVITE: the To of our requests."""
    remote_target: str
    route_set: list[str]
    remote_cseq: int
    peer: Peer
    session: LocalSession
    invite: Request
    invite_tx: ServerTransaction | None
    offer: SessionDescription | None = None
    choice: MediaChoice | None = None
    state: str = "offered"
    """offered -> answered (2xx sent) -> confirmed (ACK) -> ended."""
    local_cseq: int = 1
    rtp_port: int = 0
    awaiting_answer: bool = False
    """We put the offer in our 2xx: the answer comes in the ACK."""
    initial: bool = True
    """The 2xx in flight answers the dialog's first INVITE (not a re-INVITE)."""
    _2xx: bytes | None = field(default=None, repr=False)
    _2xx_cseq: int = 0
    _2xx_timer: Timer | None = field(default=None, repr=False)
    _2xx_interval: float = T1
    _2xx_deadline: float = 0.0

    @property
    def remote_identity(self) -> str:
        try:
            return NameAddr.parse(self.remote_header).uri
        except HeaderError:
            return "?"

    # ------------------------------------------------------------ 2xx retransmission

    def send_2xx(
        self,
        data: bytes,
        cseq: int,
        now: float,
        timers: Timers,
        send: Callable[[bytes], None],
        on_timeout: Callable[[float], None],
    ) -> None:
        """RFC 3261 13.3.1.4: retransmit the 2xx (T1 doubling to T2) until the ACK."""
        self.stop_2xx()
        self._2xx, self._2xx_cseq = data, cseq
        self._2xx_interval = T1
        self._2xx_deadline = now + TIMEOUT

        def tick(at: float) -> None:
            if self._2xx is None:
                return
            if at >= self._2xx_deadline:
                self._2xx = None
                on_timeout(at)
                return
            send(self._2xx)
            self._2xx_interval = min(self._2xx_interval * 2, T2)
            self._2xx_timer = timers.at(min(at + self._2xx_interval, self._2xx_deadline), tick)

        self._2xx_timer = timers.at(now + T1, tick)

    @property
    def awaiting_ack(self) -> bool:
        return self._2xx is not None

    def ack_matches(self, cseq: int) -> bool:
        return self._2xx is not None and cseq == self._2xx_cseq

    def stop_2xx(self) -> None:
        self._2xx = None
        if self._2xx_timer:
            self._2xx_timer.cancel()
            self._2xx_timer = None

    # ------------------------------------------------------------ requests we send

    def request(
        self, method: str, branch: str, extra: list[tuple[str, str]] | None = None
    ) -> tuple[Request, Peer]:
        """An in-dialog request (BYE) and where it goes."""
        self.local_cseq = max(self.local_cseq, 1) + 1
        headers = Headers()
        via = f"SIP/2.0/{self.peer.transport} {_host(self.peer.local_host)}:{self.peer.local_port}"
        headers.add("Via", f"{via};branch={branch};rport")
        headers.add("Max-Forwards", "70")
        headers.add("From", self.local_header)
        headers.add("To", self.remote_header)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{self.local_cseq} {method}")
        for route in self.route_set:
            headers.add("Route", route)
        for name, value in extra or []:
            headers.add(name, value)
        req = Request(headers=headers, method=method, uri=self.remote_target)
        return req, self._destination()

    def _destination(self) -> Peer:
        """First loose route, else the remote target; over UDP a target on another host
        than the one the INVITE came from is taken for a NATed Contact and replaced by
        the source address (symmetric signalling)."""
        if self.peer.reliable:
            return self.peer
        target = self.route_set[0] if self.route_set else self.remote_target
        try:
            uri = NameAddr.parse(target).sip_uri() if self.route_set else SipUri.parse(target)
            host = uri.host.strip("[]")
            ipaddress.ip_address(host)
        except (HeaderError, ValueError):
            return self.peer
        if not self.route_set and host != self.peer.host:
            return self.peer
        return self.peer.to(host, uri.port or 5060)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
