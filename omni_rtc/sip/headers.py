"""Parsers for the SIP header values the UA needs: URIs, name-addr, Via, CSeq, Digest.

Every parser raises :class:`HeaderError` (a ``ValueError``) on malformed input and
nothing else; every value class serializes back with ``str()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)$")


class HeaderError(ValueError):
    """A header value that does not parse."""


def is_token(text: str) -> bool:
    return bool(_TOKEN.match(text))


def split_commas(value: str) -> list[str]:
    """Split a multi-valued header on commas outside quotes and angle brackets."""
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for i, ch in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
    if quoted:
        raise HeaderError("unterminated quoted string")
    parts.append(value[start:].strip())
    return [p for p in parts if p]


def parse_params(text: str) -> dict[str, str | None]:
    """``;a=b;c`` -> {"a": "b", "c": None}; names lower-cased, quotes kept out."""
    params: dict[str, str | None] = {}
    for raw in text.split(";"):
        item = raw.strip()
        if not item:
            continue
        name, eq, val = item.partition("=")
        name = name.strip().lower()
        if not is_token(name):
            raise HeaderError(f"bad parameter name {name!r}")
        if eq:
            val = val.strip()
            if len(val) >= 2 and val[0] == val[-1] == '"':
                val = val[1:-1]
            params[name] = val
        else:
            params[name] = None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def split_hostport(text: str, default_port: int | None = None) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise HeaderError("unterminated IPv6 reference")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise HeaderError("garbage after IPv6 host")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = text.partition(":")
    if not host or not _HOST.match(host):
        raise HeaderError(f"bad host {host!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise HeaderError(f"bad port {port_text!r}")
    return host, int(port_text)


def bare_host(host: str) -> str:
    return host[1:-1] if host.startswith("[") else host


@dataclass
class SipUri:
    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        scheme = scheme.lower()
        if not colon or scheme not in ("sip", "sips"):
            raise HeaderError(f"not a SIP URI: {text[:80]!r}")
        rest, _, headers = rest.partition("?")
        user = password = None
        if "@" in rest:
            userinfo, _, rest = rest.rpartition("@")
            user, pw_sep, pw = userinfo.partition(":")
            password = pw if pw_sep else None
            if not user:
                raise HeaderError("empty user in SIP URI")
        hostport, _, params = rest.partition(";")
        host, port = split_hostport(hostport)
        return cls(scheme, host, user, password, port, parse_params(params), headers)

    def __str__(self) -> str:
        out = f"{self.scheme}:"
        if self.user is not None:
            out += self.user
            if self.password is not None:
                out += f":{self.password}"
            out += "@"
        out += self.host
        if self.port is not None:
            out += f":{self.port}"
        out += format_params(self.params)
        if self.headers:
            out += f"?{self.headers}"
        return out

    @property
    def transport(self) -> str:
        value = self.params.get("transport")
        return (value or ("tls" if self.scheme == "sips" else "udp")).lower()


@dataclass
class NameAddr:
    """``"Display" <uri>;params`` or a bare ``uri;params`` (From, To, Contact, Route)."""

    uri: str
    display: str = ""
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        text = text.strip()
        if not text:
            raise HeaderError("empty address")
        if text == "*":
            return cls("*")
        lt = _find_unquoted(text, "<")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise HeaderError("unterminated <uri>")
            display = text[:lt].strip()
            if display.startswith('"'):
                if len(display) < 2 or not display.endswith('"'):
                    raise HeaderError("bad display name")
                display = display[1:-1]
            uri = text[lt + 1 : gt].strip()
            params = parse_params(text[gt + 1 :]) if text[gt + 1 :].strip() else {}
            rest = text[gt + 1 :].strip()
            if rest and not rest.startswith(";"):
                raise HeaderError("garbage after <uri>")
        else:
            display = ""
            uri, _, ptext = text.partition(";")
            params = parse_params(ptext)
            if any(c in uri for c in ' "'):
                raise HeaderError("bad addr-spec")
        if not uri or ":" not in uri:
            raise HeaderError(f"bad URI {uri!r}")
        return cls(uri, display, params)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def sip_uri(self) -> SipUri:
        return SipUri.parse(self.uri)

    def __str__(self) -> str:
        if self.uri == "*":
            return "*"
        display = f'"{self.display}" ' if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def _find_unquoted(text: str, char: str) -> int:
    quoted = False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == char and not quoted:
            return i
    return -1


@dataclass
class Via:
    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Via:
        m = re.match(r"^\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)\s+([^;\s]+)\s*(;.*)?$", text, re.I)
        if not m:
            raise HeaderError(f"bad Via {text[:80]!r}")
        host, port = split_hostport(m.group(2))
        return cls(m.group(1).upper(), host, port, parse_params(m.group(3) or ""))

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"


@dataclass(frozen=True)
class CSeq:
    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit() or not is_token(parts[1]):
            raise HeaderError(f"bad CSeq {text[:80]!r}")
        number = int(parts[0])
        if number >= 2**31:
            raise HeaderError("CSeq number out of range")
        return cls(number, parts[1].upper())

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_auth(value: str) -> tuple[str, dict[str, str]]:
    """``Digest realm="x", nonce="y", qop=auth`` -> ("digest", {...})."""
    scheme, _, rest = value.strip().partition(" ")
    if not is_token(scheme):
        raise HeaderError("bad auth scheme")
    params: dict[str, str] = {}
    for item in split_commas(rest):
        name, eq, val = item.partition("=")
        name = name.strip().lower()
        if not eq or not is_token(name):
            raise HeaderError(f"bad auth parameter {item[:40]!r}")
        val = val.strip()
        if val.startswith('"'):
            if len(val) < 2 or not val.endswith('"'):
                raise HeaderError("bad quoted auth parameter")
            val = val[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        params[name] = val
    return scheme.lower(), params


def format_auth(scheme: str, params: dict[str, str], unquoted: tuple[str, ...] = ()) -> str:
    items = []
    for k, v in params.items():
        if k in unquoted:
            items.append(f"{k}={v}")
        else:
            escaped = v.replace("\\", "\\\\").replace('"', '\\"')
            items.append(f'{k}="{escaped}"')
    return f"{scheme} " + ", ".join(items)
