"""RTP/RTCP port pairs from a configured range (--rtp-ports), one pair per call."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

DEFAULT_RANGE = (40000, 40999)


def parse_port_range(text: str) -> tuple[int, int]:
    low_text, sep, high_text = text.partition("-")
    if not sep or not low_text.isdigit() or not high_text.isdigit():
        raise ValueError("--rtp-ports wants LOW-HIGH, e.g. 40000-40999")
    low, high = int(low_text), int(high_text)
    if not 1024 <= low < high <= 65535 or high - low < 1:
        raise ValueError("--rtp-ports: need 1024 <= LOW < HIGH <= 65535")
    return low, high


class _Sink(asyncio.DatagramProtocol):
    """RTCP on port+1: reserved and read, ignored."""

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        pass

    def error_received(self, exc: Exception) -> None:
        pass


class PortPool:
    """Even RTP ports (RTCP on the odd one above); released ports go to the back of the
    queue so a late packet of an ended call does not reach the next one."""

    def __init__(self, low: int = DEFAULT_RANGE[0], high: int = DEFAULT_RANGE[1]) -> None:
        first = low + (low % 2)
        self._free: deque[int] = deque(range(first, high, 2))
        self._used: set[int] = set()
        self.capacity = len(self._free)

    @property
    def in_use(self) -> int:
        return len(self._used)

    async def bind(
        self, host: str, factory: Callable[[], asyncio.DatagramProtocol]
    ) -> tuple[int, asyncio.DatagramTransport, asyncio.DatagramTransport]:
        """Bind the next free pair; raises OSError when the range is exhausted."""
        loop = asyncio.get_running_loop()
        for _ in range(len(self._free)):
            port = self._free.popleft()
            try:
                rtp, _ = await loop.create_datagram_endpoint(factory, local_addr=(host, port))
            except OSError:
                self._free.append(port)
                continue
            try:
                rtcp, _ = await loop.create_datagram_endpoint(_Sink, local_addr=(host, port + 1))
            except OSError:
                rtp.close()
                self._free.append(port)
                continue
            self._used.add(port)
            return port, rtp, rtcp
        raise OSError("no free RTP port in the configured range")

    def release(self, port: int) -> None:
        if port in self._used:
            self._used.discard(port)
            self._free.append(port)
