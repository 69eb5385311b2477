"""How many calls one client may start: a token bucket per client address, in bounded memory.

Every call-creation attempt costs a token (refused ones too: they cost CPU, and an
attacker's refused attempts are attempts). IPv6 clients are counted per /64, the block
one host usually gets. The client address is the peer's, or, when the peer is a trusted
reverse proxy, the nearest untrusted address in ``X-Forwarded-For``.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_CLIENTS = 10_000
"""Buckets kept; the least recently seen client is forgotten first (it starts afresh)."""


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``calls`` per ``per_s`` seconds for each client, bursts up to ``calls``."""

    def __init__(
        self,
        calls: int,
        per_s: float,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if calls <= 0 or per_s <= 0:
            raise ValueError("calls and period must be positive")
        self.calls = calls
        self.rate = calls / per_s
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, client: str) -> float:
        """Take one token: 0 when allowed, else the seconds until the next one."""
        now = self._clock()
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            bucket = _Bucket(float(self.calls), now)
        else:
            bucket.tokens = min(self.calls, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        self._buckets[client] = bucket  # most recently seen last
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate


def parse_networks(texts: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(t, strict=False) for t in texts)


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]
) -> IPAddress | None:
    """The caller's address: the peer's, or behind trusted proxies the first untrusted hop
    of ``X-Forwarded-For`` read from the right (entries left of it are the client's to forge).
    """
    address = _address(peer) if peer else None
    if address is None or not trusted:
        return address
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    while any(address in network for network in trusted) and hops:
        previous = _address(hops.pop())
        if previous is None:
            break  # garbage the proxy passed on: count it as the proxy's own
        address = previous
    return address


def client_key(address: IPAddress | None) -> str:
    """Bucket name: IPv4 address, IPv6 /64, or one shared bucket for unknown peers."""
    if address is None:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
