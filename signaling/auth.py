"""Who may start and end calls: the access token, or a call link signed with it.

Every route that creates a call calls :func:`admit_call` (rate limit, then token);
routes that act on calls call :func:`require_auth`. Both raise a JSON 429/401 that the
app's error middleware passes through. With no access token configured (loopback, or
``--no-auth``) every request is admitted with full rights, subject to the rate limit.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
from dataclasses import dataclass

from aiohttp import web

from omni_rtc.calls import CallOptions
from omni_rtc.config import Settings

from .ratelimit import (
    IPNetwork,
    RateLimiter,
    client_address,
    client_key,
    parse_networks,
    retry_after,
)
from .tokens import CallClaims, InvalidToken, verify

log = logging.getLogger("omni_rtc.http")

CHALLENGE = 'Bearer realm="omni-rtc"'


@dataclass(frozen=True)
class Grant:
    """What an admitted request may do; ``claims`` set for a call link."""

    claims: CallClaims | None = None

    def bind(self, options: CallOptions) -> CallOptions:
        """The call's options: what the link fixes replaces what the caller asked for."""
        claims = self.claims
        if claims is None:
            return options
        return dataclasses.replace(
            options,
            voice=claims.voice if claims.voice is not None else options.voice,
            instructions=(
                claims.instructions if claims.instructions is not None else options.instructions
            ),
            mode=claims.mode if claims.mode is not None else options.mode,
        )


FULL_ACCESS = Grant()


class Gatekeeper:
    """The edge's policy for one application: token, rate limit, trusted proxies."""

    def __init__(
        self,
        access_token: str | None,
        *,
        limiter: RateLimiter | None = None,
        trusted_proxies: tuple[IPNetwork, ...] = (),
        exempt_loopback: bool = False,
    ) -> None:
        self.access_token = access_token
        self.limiter = limiter
        self.trusted_proxies = trusted_proxies
        self.exempt_loopback = exempt_loopback
        """The default limit is for strangers: local tools (tests, benchmarks) go free."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Gatekeeper:
        rate = settings.call_rate
        return cls(
            settings.access_token,
            limiter=RateLimiter(*rate) if rate else None,
            trusted_proxies=parse_networks(settings.trusted_proxies),
            exempt_loopback=settings.rate_limit is None,
        )

    @property
    def enabled(self) -> bool:
        return self.access_token is not None

    def check(self, authorization: str | None) -> Grant:
        """The grant for an ``Authorization`` header value; :class:`InvalidToken` if none."""
        if self.access_token is None:
            return FULL_ACCESS
        if not authorization:
            raise InvalidToken("this server needs an access token or a call link")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise InvalidToken("send the token as 'Authorization: Bearer TOKEN'")
        if hmac.compare_digest(
            token.encode("utf-8", "surrogateescape"), self.access_token.encode()
        ):
            return FULL_ACCESS
        return Grant(verify(self.access_token, token))

    def client(self, request: web.BaseRequest) -> str | None:
        """The rate-limit bucket of the request's client (None: not limited)."""
        address = client_address(
            request.remote,
            request.headers.getall("X-Forwarded-For", []),
            self.trusted_proxies,
        )
        if self.exempt_loopback and address is not None and address.is_loopback:
            return None
        return client_key(address)


GATEKEEPER = web.AppKey("gatekeeper", Gatekeeper)


def _json_error(
    cls: type[web.HTTPException], message: str, headers: dict[str, str]
) -> web.HTTPException:
    return cls(
        text=json.dumps({"error": message}), content_type="application/json", headers=headers
    )


def require_auth(request: web.Request) -> Grant:
    """The request's grant, or raise 401 with a JSON error and a Bearer challenge."""
    try:
        return request.app[GATEKEEPER].check(request.headers.get("Authorization"))
    except InvalidToken as exc:
        log.info("refused %s %s from %s: %s", request.method, request.path, request.remote, exc)
        challenge = CHALLENGE
        if "Authorization" in request.headers:
            challenge += ', error="invalid_token"'
        raise _json_error(web.HTTPUnauthorized, str(exc), {"WWW-Authenticate": challenge}) from None


def optional_auth(request: web.Request) -> Grant | None:
    """The request's grant, or None when a token is required and this one is not valid."""
    try:
        return request.app[GATEKEEPER].check(request.headers.get("Authorization"))
    except InvalidToken:
        return None


def admit_call(request: web.Request) -> Grant:
    """The one check for a route that starts a call: 429 past the rate limit, then 401."""
    gate = request.app[GATEKEEPER]
    client = gate.client(request) if gate.limiter is not None else None
    if gate.limiter is not None and client is not None:
        wait = gate.limiter.acquire(client)
        if wait > 0:
            log.info("refused a call from %s: over the rate limit", client)
            raise _json_error(
                web.HTTPTooManyRequests,
                "too many calls from your address: try again later",
                {"Retry-After": retry_after(wait)},
            )
    return require_auth(request)
