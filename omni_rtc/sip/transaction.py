"""SIP transactions (RFC 3261 section 17, RFC 6026), timers and response building.

Everything here is pure: time comes in as ``now`` arguments, bytes to send go out
through a ``send`` callable the user agent provides.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from omni_rtc.sip.headers import HeaderError, Via
from omni_rtc.sip.message import Headers, Request, Response

T1 = 0.5
T2 = 4.0
T4 = 5.0
TIMEOUT = 64 * T1
MAGIC_COOKIE = "z9hG4bK"

REASONS = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Peer:
    """Where a message came from (or goes to), and through which of our listeners."""

    transport: str
    """UDP or TCP."""
    host: str
    port: int
    local_host: str
    local_port: int
    conn: int | None = None
    """The TCP connection (asyncio layer's id); None for UDP."""

    @property
    def reliable(self) -> bool:
        return self.transport != "UDP"

    def to(self, host: str, port: int) -> Peer:
        return Peer(self.transport, host, port, self.local_host, self.local_port, self.conn)


@dataclass
class Send:
    data: bytes
    peer: Peer


class Timer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[float], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """A heap of deadlines with lazy cancellation."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()

    def at(self, when: float, callback: Callable[[float], None]) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        return timer

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def run(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            _, _, timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback(now)

    def __len__(self) -> int:
        return sum(1 for _, _, t in self._heap if not t.cancelled)


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def transaction_key(req: Request) -> tuple[str, ...]:
    """RFC 3261 17.2.3: branch + sent-by + method (ACK matches its INVITE)."""
    via = req.top_via()
    method = "INVITE" if req.method == "ACK" else req.method
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return (branch, f"{via.host}:{via.port}", method)
    # RFC 2543 peers: no unique branch; match on the dialog and sequence identifiers.
    return (req.call_id, req.cseq().number.__str__(), req.from_().tag or "", str(via), method)


def mark_via(req: Request, peer: Peer) -> None:
    """RFC 3261 18.2.1 and RFC 3581: record where the request really came from."""
    values = req.headers.get_all("Via")
    via = Via.parse(values[0])
    if via.host.strip("[]") != peer.host:
        via.params["received"] = peer.host
    if "rport" in via.params:
        via.params["rport"] = str(peer.port)
        via.params["received"] = peer.host
    rest = [(n, v) for n, v in req.headers.items if n != "Via"]
    first = next(i for i, (n, _) in enumerate(req.headers.items) if n == "Via")
    vias = [("Via", str(via))] + [("Via", v) for v in values[1:]]
    req.headers.items = rest[:first] + vias + rest[first:]


def response_peer(req: Request, peer: Peer) -> Peer:
    """RFC 3261 18.2.2 + RFC 3581: where a response to ``req`` goes."""
    if peer.reliable:
        return peer
    via = req.top_via()
    host = via.params.get("received") or via.host.strip("[]")
    rport = via.params.get("rport")
    if rport and rport.isdigit():
        return peer.to(host, int(rport))
    return peer.to(host, via.port or 5060)


def make_response(
    req: Request,
    status: int,
    *,
    reason: str | None = None,
    to_tag: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    out = Headers()
    for name, value in req.headers.items:
        if name in ("Via", "From", "Call-ID", "CSeq"):
            out.add(name, value)
        elif name == "To":
            if to_tag and ";tag=" not in value.replace(" ", "").lower():
                value = f"{value};tag={to_tag}"
            out.add(name, value)
        elif name == "Record-Route" and 100 < status < 300:
            out.add(name, value)
    for name, value in headers or []:
        out.add(name, value)
    if body:
        out.add("Content-Type", content_type or "application/sdp")
    return Response(headers=out, body=body, status=status, reason=reason or REASONS[status])


Sender = Callable[[bytes, Peer], None]


@dataclass
class ServerTransaction:
    """INVITE or non-INVITE server transaction: absorbs retransmitted requests."""

    key: tuple[str, ...]
    request: Request
    peer: Peer
    send: Sender
    timers: Timers
    on_terminated: Callable[[ServerTransaction], None]
    state: str = "proceeding"
    last: bytes | None = None
    status: int = 0
    _retransmit: Timer | None = field(default=None, repr=False)
    _end: Timer | None = field(default=None, repr=False)
    _interval: float = T1

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"

    def respond(self, response: Response, now: float) -> None:
        if self.state not in ("proceeding",):
            return
        self.last = response.serialize()
        self.status = response.status
        self.send(self.last, response_peer(self.request, self.peer))
        if response.status < 200:
            return
        if not self.is_invite:
            self.state = "completed"
            self._end_in(0 if self.peer.reliable else TIMEOUT, now)
        elif response.status < 300:
            # RFC 6026 "Accepted": the dialog retransmits the 2xx; we absorb retransmissions.
            self.state = "accepted"
            self._end_in(TIMEOUT, now)
        else:
            self.state = "completed"
            if not self.peer.reliable:
                self._retransmit = self.timers.at(now + T1, self._on_retransmit)
            self._end_in(TIMEOUT, now)

    def retransmission(self) -> None:
        """The same request again: repeat our last response."""
        if self.last is not None and self.state in ("proceeding", "completed", "accepted"):
            self.send(self.last, response_peer(self.request, self.peer))

    def ack(self, now: float) -> None:
        if self.state == "completed" and self.is_invite:
            self.state = "confirmed"
            if self._retransmit:
                self._retransmit.cancel()
            self._end_in(0 if self.peer.reliable else T4, now)

    def _on_retransmit(self, now: float) -> None:
        if self.state != "completed" or self.last is None:
            return
        self.send(self.last, response_peer(self.request, self.peer))
        self._interval = min(self._interval * 2, T2)
        self._retransmit = self.timers.at(now + self._interval, self._on_retransmit)

    def _end_in(self, delay: float, now: float) -> None:
        if self._end:
            self._end.cancel()
        self._end = self.timers.at(now + delay, self._terminate)

    def _terminate(self, now: float) -> None:
        self.terminate()

    def terminate(self) -> None:
        if self.state == "terminated":
            return
        self.state = "terminated"
        for timer in (self._retransmit, self._end):
            if timer:
                timer.cancel()
        self.on_terminated(self)


ResponseCallback = Callable[[Response | None, float], None]
"""Called with the final response, or None on timeout/transport failure."""


@dataclass
class ClientTransaction:
    """Non-INVITE client transaction (BYE, REGISTER): Timer E retransmission, Timer F."""

    branch: str
    data: bytes
    peer: Peer
    send: Sender
    timers: Timers
    on_final: ResponseCallback
    on_terminated: Callable[[ClientTransaction], None]
    state: str = "trying"
    _interval: float = T1
    _retransmit: Timer | None = field(default=None, repr=False)
    _timeout: Timer | None = field(default=None, repr=False)

    def start(self, now: float) -> None:
        self.send(self.data, self.peer)
        if not self.peer.reliable:
            self._retransmit = self.timers.at(now + T1, self._on_retransmit)
        self._timeout = self.timers.at(now + TIMEOUT, self._on_timeout)

    def receive(self, response: Response, now: float) -> None:
        if self.state == "terminated":
            return
        if response.status < 200:
            self.state = "proceeding"
            return
        self._finish()
        self.on_final(response, now)

    def _on_retransmit(self, now: float) -> None:
        if self.state == "terminated":
            return
        self.send(self.data, self.peer)
        self._interval = T2 if self.state == "proceeding" else min(self._interval * 2, T2)
        self._retransmit = self.timers.at(now + self._interval, self._on_retransmit)

    def _on_timeout(self, now: float) -> None:
        if self.state == "terminated":
            return
        self._finish()
        self.on_final(None, now)

    def cancel(self) -> None:
        self._finish()

    def _finish(self) -> None:
        if self.state == "terminated":
            return
        self.state = "terminated"
        for timer in (self._retransmit, self._timeout):
            if timer:
                timer.cancel()
        self.on_terminated(self)


def response_branch(response: Response) -> str | None:
    try:
        return response.top_via().branch
    except HeaderError:
        return None
