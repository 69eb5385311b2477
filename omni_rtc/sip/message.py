"""SIP messages (RFC 3261 section 7): parse, validate, serialize, and frame TCP streams.

``parse`` turns any bytes into a :class:`Request`/:class:`Response` or raises
:class:`ParseError`; the error carries whatever request could be read so far, so the
UAS can answer ``400`` when it knows where to send it (:func:`can_answer`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from omni_rtc.sip.headers import CSeq, HeaderError, NameAddr, Via, is_token, split_commas

MAX_MESSAGE_BYTES = 65_535

COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "r": "Refer-To",
    "u": "Allow-Events",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "b": "Referred-By",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
}
_CANONICAL = {
    n.lower(): n
    for n in (
        *COMPACT.values(),
        "CSeq",
        "Max-Forwards",
        "Record-Route",
        "Route",
        "Allow",
        "Accept",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "User-Agent",
        "Server",
        "Expires",
        "Retry-After",
        "WWW-Authenticate",
        "Authorization",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Warning",
        "Reason",
        "Min-Expires",
        "Date",
    )
}
MULTI_VALUED = frozenset(
    n.lower()
    for n in (
        "Via",
        "Route",
        "Record-Route",
        "Contact",
        "Allow",
        "Accept",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Allow-Events",
        "Content-Encoding",
    )
)
_REQUEST_LINE = re.compile(r"^([A-Za-z0-9.!%*_+`'~-]+) (\S+) SIP/2\.0$", re.I)
_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6]\d\d) ?(.*)$", re.I)
_HEADER_NAME = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")


def canonical(name: str) -> str:
    lower = name.lower()
    if lower in COMPACT:
        return COMPACT[lower]
    return _CANONICAL.get(lower, name)


@dataclass
class Headers:
    """Ordered (name, value) pairs with canonical names; comma lists split on read."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        key = canonical(name).lower()
        for n, v in self.items:
            if n.lower() == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value, with comma-separated lists of multi-valued headers split."""
        key = canonical(name).lower()
        out: list[str] = []
        for n, v in self.items:
            if n.lower() == key:
                out.extend(split_commas(v) if key in MULTI_VALUED else [v])
        return out

    def add(self, name: str, value: str) -> None:
        self.items.append((canonical(name), value))

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self.add(name, value)

    def remove(self, name: str) -> None:
        key = canonical(name).lower()
        self.items = [(n, v) for n, v in self.items if n.lower() != key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def copy(self) -> Headers:
        return Headers(list(self.items))


@dataclass
class Message:
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    def cseq(self) -> CSeq:
        return CSeq.parse(self.headers.get("CSeq") or "")

    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    def top_via(self) -> Via:
        values = self.headers.get_all("Via")
        if not values:
            raise HeaderError("no Via")
        return Via.parse(values[0])

    def from_(self) -> NameAddr:
        return NameAddr.parse(self.headers.get("From") or "")

    def to(self) -> NameAddr:
        return NameAddr.parse(self.headers.get("To") or "")

    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def _start_line(self) -> str:
        raise NotImplementedError

    def serialize(self) -> bytes:
        lines = [self._start_line()]
        lines += [f"{n}: {v}" for n, v in self.headers.items if n != "Content-Length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass
class Request(Message):
    method: str = ""
    uri: str = ""

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"


@dataclass
class Response(Message):
    status: int = 0
    reason: str = ""

    def _start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"


class ParseError(ValueError):
    """Malformed input; ``partial`` is the request as far as it could be read."""

    def __init__(self, reason: str, partial: Request | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial


def parse(data: bytes, *, stream: bool = False) -> Request | Response:
    """One message from a datagram (or a framed stream message when ``stream``)."""
    try:
        return _parse(data, stream)
    except ParseError:
        raise
    except (ValueError, UnicodeError, IndexError) as exc:  # pragma: no cover - belt and braces
        raise ParseError(f"unparseable message: {exc}") from None


def _parse(data: bytes, stream: bool) -> Request | Response:
    if len(data) > MAX_MESSAGE_BYTES:
        raise ParseError("message too large")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
        if not sep:
            raise ParseError("no end of headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("headers are not UTF-8") from None
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[0]:
        lines.pop(0)  # RFC 3261 7.5: tolerate leading CRLFs
    if not lines:
        raise ParseError("empty message")
    start, header_lines = lines[0], lines[1:]
    msg: Request | Response
    req_match = _REQUEST_LINE.match(start)
    if req_match:
        msg = Request(method=req_match.group(1).upper(), uri=req_match.group(2))
    else:
        status_match = _STATUS_LINE.match(start)
        if not status_match:
            raise ParseError("bad start line")
        msg = Response(status=int(status_match.group(1)), reason=status_match.group(2))
    partial = msg if isinstance(msg, Request) else None
    for line in header_lines:
        if line[:1] in (" ", "\t"):
            if not msg.headers.items:
                raise ParseError("continuation line before any header", partial)
            name, value = msg.headers.items[-1]
            msg.headers.items[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _HEADER_NAME.match(name):
            raise ParseError(f"bad header line {line[:60]!r}", partial)
        msg.headers.add(name, value.strip())
    length_text = msg.headers.get("Content-Length")
    if length_text is None:
        if stream:
            raise ParseError("Content-Length is required on a stream", partial)
        length = len(body)
    else:
        if not length_text.isdigit() or len(length_text) > 9:
            raise ParseError("bad Content-Length", partial)
        length = int(length_text)
        if length > len(body):
            raise ParseError("body shorter than Content-Length", partial)
    msg.body = body[:length]
    _validate(msg, partial)
    return msg


def _validate(msg: Request | Response, partial: Request | None) -> None:
    try:
        vias = msg.vias()
        if not vias:
            raise ParseError("no Via", partial)
        msg.from_()
        msg.to()
        cseq = msg.cseq()
        if not msg.call_id or " " in msg.call_id:
            raise ParseError("bad or missing Call-ID", partial)
        for name in {n.lower() for n, _ in msg.headers.items} & MULTI_VALUED:
            msg.headers.get_all(name)  # comma lists must split (quotes closed)
        max_forwards = msg.headers.get("Max-Forwards")
        if max_forwards is not None and (not max_forwards.isdigit() or int(max_forwards) > 255):
            raise ParseError("bad Max-Forwards", partial)
        if isinstance(msg, Request):
            if cseq.method != msg.method:
                raise ParseError("CSeq method does not match the request", partial)
            if not is_token(msg.method) or ":" not in msg.uri:
                raise ParseError("bad Request-URI", partial)
    except HeaderError as exc:
        raise ParseError(str(exc), partial) from None


def can_answer(req: Request) -> bool:
    """Whether a (possibly malformed) request has what a response needs."""
    try:
        req.top_via()
    except HeaderError:
        return False
    return all(req.headers.get(h) for h in ("From", "To", "Call-ID", "CSeq")) and bool(
        re.match(r"^\d+\s+\S+$", req.headers.get("CSeq") or "")
    )


class StreamFramer:
    """Split a TCP byte stream into messages by Content-Length (RFC 3261 18.3)."""

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._buffer = bytearray()
        self.max_bytes = max_bytes

    def feed(self, data: bytes) -> list[bytes]:
        """Complete messages; raises ParseError when the stream cannot be framed."""
        self._buffer += data
        out: list[bytes] = []
        while True:
            while self._buffer[:2] == b"\r\n":  # keep-alive CRLFs (RFC 5626)
                del self._buffer[:2]
            if self._buffer[:1] == b"\n":
                del self._buffer[:1]
                continue
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self.max_bytes:
                    raise ParseError("header section too large")
                return out
            head = bytes(self._buffer[:end])
            match = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d{1,9})[ \t]*$", head)
            if match is None:
                raise ParseError("Content-Length is required on a stream")
            total = end + 4 + int(match.group(1))
            if total > self.max_bytes:
                raise ParseError("message too large")
            if len(self._buffer) < total:
                return out
            out.append(bytes(self._buffer[:total]))
            del self._buffer[:total]
