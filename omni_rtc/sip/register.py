"""REGISTER client (RFC 3261 section 10): register, answer the digest challenge, refresh
before expiry, retry with backoff after failures, unregister (Expires: 0) at shutdown.

Pure like the rest of the core: it builds requests and hands them to the user agent's
client transactions; time comes in as ``now``.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass

from omni_rtc.sip.auth import answer_challenge, pick_challenge
from omni_rtc.sip.headers import HeaderError, NameAddr
from omni_rtc.sip.message import Headers, Request, Response
from omni_rtc.sip.transaction import Peer, Timer, new_branch, new_tag
from omni_rtc.sip.uas import UserAgent

log = logging.getLogger("omni_rtc.sip.register")

RETRY_MIN_S = 5.0
RETRY_MAX_S = 300.0


@dataclass(frozen=True)
class RegisterTarget:
    user: str
    password: str
    host: str
    port: int = 5060

    @classmethod
    def parse(cls, text: str) -> RegisterTarget:
        """``sip:USER:PASSWORD@REGISTRAR[:PORT]``."""
        m = re.match(r"^sips?:([^:@]+):([^@]*)@(\[[0-9a-fA-F:.]+\]|[^:;@]+)(?::(\d+))?$", text)
        if not m:
            raise ValueError("--sip-register wants sip:USER:PASSWORD@REGISTRAR[:PORT]")
        port = int(m.group(4) or 5060)
        if not 0 < port < 65536:
            raise ValueError("registrar port out of range")
        return cls(m.group(1), m.group(2), m.group(3), port)

    def __repr__(self) -> str:  # never print the password
        return f"RegisterTarget(user={self.user!r}, host={self.host!r}, port={self.port})"


class Registration:
    """One registration binding kept alive through ``ua``'s client transactions."""

    def __init__(
        self,
        ua: UserAgent,
        target: RegisterTarget,
        peer: Peer,
        *,
        expires: int = 3600,
        contact_host: str | None = None,
    ) -> None:
        self.ua = ua
        self.target = target
        self.peer = peer
        self.expires = expires
        self.contact_host = contact_host or peer.local_host
        self.call_id = secrets.token_hex(12)
        self.tag = new_tag()
        self.cseq = 0
        self.state = "idle"
        """idle, registering, registered, retrying, unregistering, stopped."""
        self.granted = 0
        self.failures = 0
        self.last_status: int | None = None
        self._timer: Timer | None = None
        self._auth_tried = False

    @property
    def aor(self) -> str:
        return f"sip:{self.target.user}@{self.target.host}"

    @property
    def registrar_uri(self) -> str:
        port = f":{self.target.port}" if self.target.port != 5060 else ""
        return f"sip:{self.target.host}{port}"

    def start(self, now: float) -> None:
        self.state = "registering"
        self._auth_tried = False
        self._send(now, self.expires)

    def stop(self, now: float) -> None:
        """Unregister (Expires: 0) if registered; no more refreshes."""
        if self._timer:
            self._timer.cancel()
        if self.state == "registered":
            self.state = "unregistering"
            self._auth_tried = False
            self._send(now, 0)
        else:
            self.state = "stopped"

    def _request(self, expires: int, authorization: str | None) -> Request:
        self.cseq += 1
        host = self.peer.local_host
        host = f"[{host}]" if ":" in host else host
        contact_host = f"[{self.contact_host}]" if ":" in self.contact_host else self.contact_host
        transport = ";transport=tcp" if self.peer.transport == "TCP" else ""
        h = Headers()
        h.add("Via", f"SIP/2.0/{self.peer.transport} {host}:{self.peer.local_port}"
              f";branch={new_branch()};rport")  # fmt: skip
        h.add("Max-Forwards", "70")
        h.add("From", f"<{self.aor}>;tag={self.tag}")
        h.add("To", f"<{self.aor}>")
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.cseq} REGISTER")
        h.add(
            "Contact",
            f"<sip:{self.target.user}@{contact_host}:{self.peer.local_port}{transport}>",
        )
        h.add("Expires", str(expires))
        if authorization:
            h.add("Authorization", authorization)
        h.add("User-Agent", self.ua.user_agent)
        return Request(headers=h, method="REGISTER", uri=self.registrar_uri)

    def _send(self, now: float, expires: int, authorization: str | None = None) -> None:
        req = self._request(expires, authorization)
        self.ua.send_request(req, self.peer, lambda r, at: self._final(r, at, expires), now)

    def _final(self, response: Response | None, now: float, expires: int) -> None:
        if self.state == "stopped":
            return
        self.last_status = response.status if response else None
        if response is not None and response.status in (401, 407) and not self._auth_tried:
            header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
            challenge = pick_challenge(response.headers.get_all(header))
            if challenge is not None:
                self._auth_tried = True
                try:
                    value = answer_challenge(
                        challenge,
                        username=self.target.user,
                        password=self.target.password,
                        method="REGISTER",
                        uri=self.registrar_uri,
                        cnonce=secrets.token_hex(8),
                    )
                except HeaderError:
                    value = None
                if value is not None:
                    req = self._request(expires, value)
                    if response.status == 407:  # same Digest syntax, other header name
                        req.headers.remove("Authorization")
                        req.headers.add("Proxy-Authorization", value)
                    self.ua.send_request(
                        req, self.peer, lambda r, at: self._final(r, at, expires), now
                    )
                    return
        if self.state == "unregistering":
            self.state = "stopped"
            log.info("unregistered from %s (%s)", self.target.host, self.last_status or "timeout")
            return
        if response is not None and 200 <= response.status < 300:
            self.granted = self._granted(response, expires)
            self.state = "registered"
            self.failures = 0
            self._auth_tried = False
            refresh = max(self.granted * 0.5, min(self.granted - 30, self.granted * 0.9), 1.0)
            self._timer = self.ua.timers.at(now + refresh, self._refresh)
            log.info("registered %s at %s for %d s", self.aor, self.target.host, self.granted)
            return
        if response is not None and response.status == 423:
            min_expires = response.headers.get("Min-Expires") or ""
            if min_expires.isdigit() and int(min_expires) > expires:
                self.expires = int(min_expires)
                self._send(now, self.expires)
                return
        self.failures += 1
        self.state = "retrying"
        delay = min(RETRY_MIN_S * 2 ** (self.failures - 1), RETRY_MAX_S)
        log.warning(
            "registration at %s failed (%s); retrying in %.0f s",
            self.target.host,
            self.last_status or "timeout",
            delay,
        )
        self._timer = self.ua.timers.at(now + delay, self._refresh)

    def _refresh(self, now: float) -> None:
        if self.state in ("stopped", "unregistering"):
            return
        self.state = "registering" if self.state != "registered" else "registered"
        self._auth_tried = False
        self._send(now, self.expires)

    def _granted(self, response: Response, asked: int) -> int:
        for value in response.headers.get_all("Contact"):
            try:
                contact = NameAddr.parse(value)
            except HeaderError:
                continue
            if f"@{self.contact_host}" in contact.uri or contact.uri.endswith(self.contact_host):
                granted = contact.params.get("expires")
                if granted and granted.isdigit():
                    return int(granted)
        header = response.headers.get("Expires") or ""
        return int(header) if header.isdigit() else asked
