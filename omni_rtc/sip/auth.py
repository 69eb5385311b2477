"""Who may call: a source allow-list (CIDRs) and/or Digest auth (RFC 2617 / 7616 / 8760).

Nonces are stateless: ``timestamp.hmac(secret, timestamp, realm)``, so no table grows
with the number of callers; a nonce is good for ``nonce_ttl`` seconds and an expired
one is re-challenged with ``stale=true``.  Challenges go out MD5 first, then SHA-256:
many SIP clients (sipp, older phones and PBXs) answer only the first WWW-Authenticate
header and know only MD5; clients that know both are free to pick SHA-256.  A nonce can
be replayed within its lifetime (no nonce-count table): the price of keeping no
per-caller state.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from omni_rtc.sip.headers import HeaderError, format_auth, parse_auth

ALGORITHMS = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
OPEN_PORT_WARNING = (
    "refusing to start the SIP listener without --sip-allow or --sip-user/--sip-password: "
    "an open SIP port is found by scanners and abused for toll fraud within minutes of "
    "going online. Allow your PBX or trunk by address (--sip-allow 203.0.113.0/24) "
    "and/or require digest credentials."
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _h(algorithm: str, text: str) -> str:
    return ALGORITHMS[algorithm](text.encode()).hexdigest()


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str = "",
    cnonce: str = "",
) -> str:
    ha1 = _h(algorithm, f"{username}:{realm}:{password}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop:
        return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(algorithm, f"{ha1}:{nonce}:{ha2}")


class Verdict(Enum):
    ALLOWED = "allowed"
    """Source allowed or credentials correct."""
    CHALLENGE = "challenge"
    """No (or stale) credentials: answer 401 with the challenges."""
    FORBIDDEN = "forbidden"
    """Wrong credentials, or a source that may not call and cannot authenticate: 403."""


@dataclass
class AuthDecision:
    verdict: Verdict
    challenges: list[str] = field(default_factory=list)
    reason: str = ""


def parse_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


class Authenticator:
    def __init__(
        self,
        *,
        allow: Sequence[str] = (),
        username: str | None = None,
        password: str | None = None,
        realm: str = "omni-rtc",
        nonce_ttl: float = 300.0,
        secret: bytes | None = None,
        algorithms: Sequence[str] = ("MD5", "SHA-256"),
    ) -> None:
        self.networks = parse_networks(allow)
        if bool(username) != bool(password):
            raise ValueError("--sip-user and --sip-password go together")
        self.username = username
        self.password = password
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        self._secret = secret or secrets.token_bytes(32)
        self.algorithms = tuple(a.upper() for a in algorithms)
        if not self.algorithms or any(a not in ALGORITHMS for a in self.algorithms):
            raise ValueError(f"digest algorithms: some of {', '.join(ALGORITHMS)}")
        if not self.networks and not self.username:
            raise ValueError(OPEN_PORT_WARNING)

    def source_allowed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self.networks)

    def make_nonce(self, now: float) -> str:
        return self._signed(f"{int(now * 1000):x}")

    def _signed(self, stamp: str) -> str:
        mac = hmac.new(self._secret, f"{stamp}:{self.realm}".encode(), "sha256").digest()[:16]
        return f"{stamp}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"

    def _nonce_state(self, nonce: str, now: float) -> str:
        # The stamp as it came is what was signed: turning it into seconds and back to
        # a stamp does not always give the same milliseconds (floating point), which
        # re-challenged about one good answer in six.
        stamp, _, _ = nonce.partition(".")
        try:
            issued = int(stamp, 16) / 1000
        except ValueError:
            return "bad"
        if not hmac.compare_digest(self._signed(stamp).encode(), nonce.encode()):
            return "bad"
        return "fresh" if 0 <= now - issued <= self.nonce_ttl else "stale"

    def challenges(self, now: float, stale: bool = False) -> list[str]:
        nonce = self.make_nonce(now)
        out = []
        for algorithm in self.algorithms:
            params = {"realm": self.realm, "nonce": nonce, "algorithm": algorithm, "qop": "auth"}
            if stale:
                params["stale"] = "true"
            out.append(format_auth("Digest", params, unquoted=("algorithm", "stale")))
        return out

    def check(
        self, *, source: str, method: str, authorization: str | None, now: float
    ) -> AuthDecision:
        if self.source_allowed(source):
            return AuthDecision(Verdict.ALLOWED, reason="source allowed")
        if not self.username or not self.password:
            return AuthDecision(Verdict.FORBIDDEN, reason="source not allowed")
        if authorization is None:
            return AuthDecision(Verdict.CHALLENGE, self.challenges(now), "no credentials")
        try:
            scheme, params = parse_auth(authorization)
        except HeaderError:
            return AuthDecision(Verdict.FORBIDDEN, reason="malformed Authorization")
        algorithm = params.get("algorithm", "MD5").upper()
        if scheme != "digest" or algorithm not in self.algorithms:
            return AuthDecision(Verdict.CHALLENGE, self.challenges(now), "unsupported scheme")
        if params.get("realm") != self.realm:
            return AuthDecision(Verdict.CHALLENGE, self.challenges(now), "wrong realm")
        state = self._nonce_state(params.get("nonce", ""), now)
        if state == "bad":
            return AuthDecision(Verdict.CHALLENGE, self.challenges(now), "unknown nonce")
        qop = params.get("qop")
        if qop not in (None, "auth"):
            return AuthDecision(Verdict.FORBIDDEN, reason="unsupported qop")
        expected = digest_response(
            algorithm=algorithm,
            username=params.get("username", ""),
            realm=self.realm,
            password=self.password,
            method=method,
            uri=params.get("uri", ""),
            nonce=params.get("nonce", ""),
            qop=qop,
            nc=params.get("nc", ""),
            cnonce=params.get("cnonce", ""),
        )
        good_user = hmac.compare_digest(params.get("username", ""), self.username)
        good = hmac.compare_digest(expected, params.get("response", "").lower())
        if not (good_user and good):
            return AuthDecision(Verdict.FORBIDDEN, reason="wrong credentials")
        if state == "stale":
            return AuthDecision(Verdict.CHALLENGE, self.challenges(now, stale=True), "stale nonce")
        return AuthDecision(Verdict.ALLOWED, reason="digest")


def answer_challenge(
    challenge: str, *, username: str, password: str, method: str, uri: str, cnonce: str
) -> str:
    """The Authorization value for one WWW-/Proxy-Authenticate challenge (client side)."""
    scheme, params = parse_auth(challenge)
    algorithm = params.get("algorithm", "MD5").upper()
    if scheme != "digest" or algorithm not in ALGORITHMS:
        raise HeaderError(f"unsupported challenge {scheme} {algorithm}")
    qops = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
    if qops and "auth" not in qops:
        raise HeaderError("challenge needs a qop other than auth")
    qop = "auth" if qops else None
    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    response = digest_response(
        algorithm=algorithm,
        username=username,
        realm=realm,
        password=password,
        method=method,
        uri=uri,
        nonce=nonce,
        qop=qop,
        nc="00000001",
        cnonce=cnonce,
    )
    out = {"username": username, "realm": realm, "nonce": nonce, "uri": uri}
    out["response"] = response
    out["algorithm"] = algorithm
    if "opaque" in params:
        out["opaque"] = params["opaque"]
    unquoted: tuple[str, ...] = ("algorithm",)
    if qop:
        out.update(qop=qop, nc="00000001", cnonce=cnonce)
        unquoted += ("qop", "nc")
    return format_auth("Digest", out, unquoted=unquoted)


def pick_challenge(challenges: Sequence[str]) -> str | None:
    """The strongest Digest challenge we can answer (SHA-256 before MD5)."""
    usable: list[tuple[int, str]] = []
    for challenge in challenges:
        try:
            scheme, params = parse_auth(challenge)
        except HeaderError:
            continue
        algorithm = params.get("algorithm", "MD5").upper()
        if scheme == "digest" and algorithm in ALGORITHMS:
            usable.append((0 if algorithm == "SHA-256" else 1, challenge))
    return min(usable)[1] if usable else None
