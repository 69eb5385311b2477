"""ICE set-up: explicit STUN/TURN servers, host-address restriction, TURN REST credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Sequence

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from .config import IceServer, Settings

try:  # aiortc 1.16 (Python >= 3.11); 1.15, the last for Python 3.10, gathers every kind
    from aiortc.rtcconfiguration import RTCIceTransportPolicy
except ImportError:  # pragma: no cover - exercised on Python 3.10 only
    RTCIceTransportPolicy = None  # type: ignore[assignment,misc]

_ORIGINAL_GET_HOST_ADDRESSES = aioice.ice.get_host_addresses


def restrict_host_addresses(addresses: Sequence[str]) -> None:
    """Make aioice gather host candidates only on ``addresses`` (process-wide).

    aioice offers every interface address except 127.0.0.1 and has no option to choose;
    tests need loopback, and servers with many interfaces need to pick one.
    """
    if not addresses:
        aioice.ice.get_host_addresses = _ORIGINAL_GET_HOST_ADDRESSES
        return
    chosen = [ipaddress.ip_address(a) for a in addresses]

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            str(a) for a in chosen if (a.version == 4 and use_ipv4) or (a.version == 6 and use_ipv6)
        ]

    aioice.ice.get_host_addresses = get_host_addresses


def turn_rest_credentials(
    secret: str, ttl: int, user: str = "omni-rtc", now: float | None = None
) -> tuple[str, str]:
    """Short-lived TURN credentials (coturn ``use-auth-secret``): ``expiry:user`` + HMAC."""
    expiry = int(now if now is not None else time.time()) + ttl
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def resolve_ice_servers(
    settings: Settings, user: str = "omni-rtc", servers: Sequence[IceServer] | None = None
) -> list[IceServer]:
    """The configured servers, with minted credentials for TURN servers that need them."""
    out = []
    for server in settings.ice_servers if servers is None else servers:
        if server.is_turn and server.username is None and settings.turn_secret:
            username, credential = turn_rest_credentials(
                settings.turn_secret, settings.turn_ttl, user
            )
            server = IceServer(server.urls, username, credential)
        out.append(server)
    return out


def rtc_configuration(settings: Settings) -> RTCConfiguration:
    """Always explicit: aiortc falls back to Google's public STUN when given nothing."""
    servers = [
        RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
        for s in resolve_ice_servers(settings, "omni-rtc-bridge", settings.own_ice_servers)
    ]
    if RTCIceTransportPolicy is None:
        return RTCConfiguration(iceServers=servers)  # the settings refuse "relay" there
    policy = (
        RTCIceTransportPolicy.RELAY
        if settings.ice_transport_policy == "relay"
        else RTCIceTransportPolicy.ALL
    )
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)
