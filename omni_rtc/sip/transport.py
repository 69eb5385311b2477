"""asyncio UDP and TCP listeners that hand SIP bytes to the user agent and send its output."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from omni_rtc.sip.message import ParseError, StreamFramer
from omni_rtc.sip.transaction import Peer

log = logging.getLogger("omni_rtc.sip.transport")

Deliver = Callable[[bytes, Peer], None]
MAX_TCP_CONNECTIONS = 512
TCP_IDLE_S = 600.0


@dataclass(frozen=True)
class ListenAddress:
    transport: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """``udp:HOST:PORT`` or ``tcp:HOST:PORT`` (IPv6 as ``udp:[::1]:5060``)."""
        transport, sep, rest = text.partition(":")
        host, colon, port = rest.rpartition(":")
        transport = transport.upper()
        if not sep or not colon or transport not in ("UDP", "TCP") or not port.isdigit():
            raise ValueError(f"--sip-listen wants udp:HOST:PORT or tcp:HOST:PORT, not {text!r}")
        if not 0 <= int(port) < 65536 or not host:
            raise ValueError(f"--sip-listen: bad host or port in {text!r}")
        return cls(transport, host.strip("[]"), int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport.lower()}:{host}:{self.port}"


_local_cache: dict[tuple[str, str], str] = {}


def local_address_for(bind_host: str, remote: str) -> str:
    """The address a wildcard-bound socket uses towards ``remote`` (no packet is sent)."""
    if bind_host not in ("0.0.0.0", "::", ""):
        return bind_host
    key = (bind_host, remote)
    if key not in _local_cache:
        family = socket.AF_INET6 if ":" in remote else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((remote, 9))
                _local_cache[key] = probe.getsockname()[0]
            except OSError:
                return "127.0.0.1" if family == socket.AF_INET else "::1"
        if len(_local_cache) > 1024:
            _local_cache.clear()
    return _local_cache[key]


class UdpListener(asyncio.DatagramProtocol):
    def __init__(self, address: ListenAddress, deliver: Deliver) -> None:
        self.address = address
        self.deliver = deliver
        self.transport: asyncio.DatagramTransport | None = None
        self.port = address.port
        self._closed: asyncio.Future[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self,
            local_addr=(self.address.host, self.address.port),
        )
        self.port = self.transport.get_extra_info("sockname")[1]
        self._closed = loop.create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        host, port = str(addr[0]), int(addr[1])
        local = local_address_for(self.address.host, host)
        self.deliver(data, Peer("UDP", host, port, local, self.port))

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP UDP socket error: %s", exc)

    def send(self, data: bytes, peer: Peer) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, (peer.host, peer.port))

    async def close(self) -> None:
        """Close and wait until the socket is really closed (the port is free again)."""
        if self.transport is not None:
            self.transport.close()
            if self._closed is not None:
                await self._closed


class TcpListener:
    _ids = itertools.count(1)

    def __init__(self, address: ListenAddress, deliver: Deliver) -> None:
        self.address = address
        self.deliver = deliver
        self.port = address.port
        self._server: asyncio.Server | None = None
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accepted, self.address.host, self.address.port
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= MAX_TCP_CONNECTIONS:
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = next(self._ids)
        self._writers[conn] = writer
        remote = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        framer = StreamFramer()
        try:
            while True:
                data = await asyncio.wait_for(reader.read(65536), TCP_IDLE_S)
                if not data:
                    break
                for message in framer.feed(data):
                    peer = Peer("TCP", remote[0], remote[1], local[0], self.port, conn)
                    self.deliver(message, peer)
        except ParseError as exc:
            log.info("closing SIP TCP connection from %s: %s", remote[0], exc.reason)
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            self._writers.pop(conn, None)
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    def send(self, data: bytes, peer: Peer) -> None:
        writer = self._writers.get(peer.conn or 0)
        if writer is None or writer.is_closing():
            log.debug("SIP TCP connection %s is gone; dropped %d bytes", peer.conn, len(data))
            return
        writer.write(data)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers.values()):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()
