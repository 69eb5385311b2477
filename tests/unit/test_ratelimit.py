"""The per-client call rate limit: token buckets, bounded memory, the client's address."""

import ipaddress

import pytest

from signaling.ratelimit import (
    RateLimiter,
    client_address,
    client_key,
    parse_networks,
    retry_after,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_up_to_the_limit_then_refills_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(3, 60.0, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("a")
    assert wait == pytest.approx(20.0)  # one call every 20 s
    assert retry_after(wait) == "20"
    assert limiter.acquire("b") == 0.0  # another client has its own bucket
    clock.now += 20.0
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    clock.now += 3600
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # full, not more


def test_memory_is_bounded_and_the_least_recent_client_is_forgotten() -> None:
    limiter = RateLimiter(1, 60.0, max_clients=100, clock=Clock())
    limiter.acquire("first")
    for i in range(10_000):
        limiter.acquire(f"client-{i}")
    assert len(limiter) == 100
    assert limiter.acquire("first") == 0.0  # forgotten: starts afresh


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert retry_after(0.01) == "1"
    assert retry_after(2.2) == "3"


TRUSTED = parse_networks(["10.0.0.0/8", "127.0.0.1"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("203.0.113.5", [], TRUSTED, "203.0.113.5"),
        ("203.0.113.5", ["198.51.100.1"], TRUSTED, "203.0.113.5"),  # untrusted peer: ignored
        ("203.0.113.5", ["198.51.100.1"], (), "203.0.113.5"),  # no trusted proxy: ignored
        ("10.0.0.2", ["198.51.100.1"], TRUSTED, "198.51.100.1"),
        ("10.0.0.2", ["1.1.1.1, 198.51.100.1"], TRUSTED, "198.51.100.1"),  # left is forgeable
        ("10.0.0.2", ["198.51.100.1, 10.0.0.9"], TRUSTED, "198.51.100.1"),  # two proxies
        ("10.0.0.2", ["198.51.100.1", "10.0.0.9"], TRUSTED, "198.51.100.1"),  # two headers
        ("10.0.0.2", ["garbage"], TRUSTED, "10.0.0.2"),
        ("10.0.0.2", [], TRUSTED, "10.0.0.2"),
        ("::ffff:10.0.0.2", ["198.51.100.1"], TRUSTED, "198.51.100.1"),
        (None, ["198.51.100.1"], TRUSTED, None),
    ],
)
def test_client_address_behind_trusted_proxies(peer, forwarded, trusted, expected) -> None:  # type: ignore[no-untyped-def]
    address = client_address(peer, forwarded, trusted)
    assert (str(address) if address else None) == expected


def test_ipv6_clients_share_a_bucket_per_64() -> None:
    a = client_key(ipaddress.ip_address("2001:db8:1:2::1"))
    b = client_key(ipaddress.ip_address("2001:db8:1:2:ffff::9"))
    c = client_key(ipaddress.ip_address("2001:db8:1:3::1"))
    assert a == b == "2001:db8:1:2::/64"
    assert c != a
    assert client_key(ipaddress.ip_address("192.0.2.1")) == "192.0.2.1"
    assert client_key(None) == "unknown"
