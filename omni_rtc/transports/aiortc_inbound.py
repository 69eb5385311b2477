"""A call's SRTP packets handled in its socket's callback, not through aioice's queue.

aioice hands every datagram it receives to a queue that aiortc's DTLS transport reads
in a task: for each RTP packet a STUN parse attempt (an exception for anything that is
not STUN), a queue hand-off, a task wake-up and four coroutine frames resumed, before
SRTP even starts.  Once DTLS is connected, :func:`receive_inline` lets the connection's
sockets do what that task does with an SRTP or SRTCP packet (RFC 7983: first byte
128-191): count it, unprotect it and route it to its receiver, right away.  Everything
else (STUN, DTLS records, and any packet while older ones still wait in the queue) goes
the usual way, so aiortc sees the packets in the order they came.

aiortc's handlers are coroutines that, on UDP, never wait (their sends complete at
once).  One that does wait is finished in a task, and the SRTP packets that arrive
meanwhile are handled after it, in order, as aiortc's task would.  A handler that fails
is logged and the connection goes back to aiortc's own path (a bad packet never closes
the socket); one that finds the connection gone ends the receive loop as aiortc's does.
The common RTP packet skips those coroutines (:mod:`aiortc_rtp_in`); an RTCP send of
its (NACK, PLI, REMB) that waited would finish in a task of its own while packets go
on: feedback keeps no order with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import pylibsrtp
from aioice.ice import Connection, StunProtocol
from aiortc import clock, rtcdtlstransport
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import is_rtcp

from . import aiortc_fastpath, aiortc_rtp_in

log = logging.getLogger("omni_rtc.webrtc")

_DTLS = "_RTCDtlsTransport__"
_NEEDS: dict[Callable[..., Any], tuple[str, ...]] = {
    RTCDtlsTransport._send_rtp: ("_state",),  # read here for every packet
    RTCDtlsTransport._recv_next: (
        _DTLS + "rx_bytes",
        _DTLS + "rx_packets",
        "_rx_srtp",
        "unprotect",
        "unprotect_rtcp",
        "_handle_rtp_data",
        "_handle_rtcp_data",
        "current_ms",
        "is_rtcp",
    ),
    Connection.data_received: ("_queue", "put_nowait"),
    StunProtocol.datagram_received: ("receiver", "data_received", "parse_message"),
}
"""What this module does in aiortc's and aioice's stead; if they changed, it stays off."""


@functools.cache
def layout_problems() -> list[str]:
    """What changed in aiortc/aioice that this module relies on (checked once)."""
    more = []
    if not hasattr(getattr(rtcdtlstransport, "State", None), "CONNECTED"):
        more.append("aiortc.rtcdtlstransport.State.CONNECTED is gone")
    return aiortc_fastpath.checked_layout(
        _NEEDS, "caller media goes through aioice's queue", more=more
    )


def is_srtp(data: bytes) -> bool:
    """RFC 7983's demultiplexing: SRTP and SRTCP start with a byte in 128..191."""
    return 127 < data[0] < 192 if data else False


class InlineReceiver:
    """The SRTP branch of aiortc's ``RTCDtlsTransport._recv_next``, run per datagram."""

    def __init__(self, dtls: RTCDtlsTransport, connection: Connection) -> None:
        self.dtls: Any = dtls
        self.connection = connection
        self.handled = 0
        """Packets handled here (the rest went through the queue)."""
        self.waited = 0
        """Handlers that waited (finished in a task)."""
        self.active = True
        self._queue: asyncio.Queue[Any] = connection._queue
        self._connected = rtcdtlstransport.State.CONNECTED
        self._protocols: list[StunProtocol] = []
        self._backlog: deque[bytes] | None = None
        """SRTP packets that came while a handler waited (None: none waits)."""
        self.rtp_in: aiortc_rtp_in.RtpIn | None = None
        if not aiortc_rtp_in.layout_problems():
            self.rtp_in = aiortc_rtp_in.RtpIn(dtls, self._finish_send)
        """The common RTP packet past aiortc's coroutines (None: all go through them)."""
        self._sending: set[asyncio.Task[None]] = set()
        self._finishing: asyncio.Task[None] | None = None
        """Held while a handler that waited finishes (the loop keeps tasks only weakly)."""
        dtls.on("statechange", self._on_dtls_state)

    def attach(self, protocol: StunProtocol) -> None:
        def datagram_received(data: bytes | str, addr: tuple[Any, ...]) -> None:
            if (
                self.active
                and self._queue.empty()
                and isinstance(data, bytes)
                and is_srtp(data)
                and self.dtls._state is self._connected
            ):
                if self._backlog is not None:
                    self._backlog.append(data)
                    return
                try:
                    self.receive(data)
                except Exception:  # never into asyncio's callback: it would close the socket
                    self._failed()
            else:
                StunProtocol.datagram_received(protocol, data, addr)

        protocol.datagram_received = datagram_received  # type: ignore[method-assign]
        self._protocols.append(protocol)

    def detach(self) -> None:
        """Back to aioice's and aiortc's own path (also when DTLS leaves "connected")."""
        if not self.active:
            return
        self.active = False
        for protocol in self._protocols:
            vars(protocol).pop("datagram_received", None)
        self._protocols.clear()
        for task in self._sending:
            task.cancel()
        self.dtls.remove_listener("statechange", self._on_dtls_state)
        backlog, self._backlog = self._backlog, None
        for data in backlog or ():
            self.connection.data_received(data, 1)  # behind the one that waits: to aiortc

    def _on_dtls_state(self) -> None:
        if self.dtls._state is not self._connected:
            self.detach()

    def receive(self, data: bytes) -> None:
        handling = self._start(data)
        if handling is None:
            return
        try:
            pending = handling.send(None)
        except StopIteration:
            return
        except ConnectionError:
            self._disconnected()
            return
        except Exception:
            self._failed()
            return
        self.waited += 1
        self._backlog = deque()
        self._finishing = asyncio.ensure_future(self._finish(_Rest(handling, pending)))

    def _start(self, data: bytes) -> Coroutine[Any, Any, None] | None:
        dtls = self.dtls
        dtls._RTCDtlsTransport__rx_bytes += len(data)
        dtls._RTCDtlsTransport__rx_packets += 1
        arrival_time_ms = clock.current_ms()
        handling: Coroutine[Any, Any, None]
        try:
            if is_rtcp(data):
                handling = dtls._handle_rtcp_data(dtls._rx_srtp.unprotect_rtcp(data))
            else:
                plain = dtls._rx_srtp.unprotect(data)
                if self.rtp_in is not None and self._handled_plainly(plain, arrival_time_ms):
                    self.handled += 1
                    return None
                handling = dtls._handle_rtp_data(plain, arrival_time_ms=arrival_time_ms)
        except pylibsrtp.Error as exc:
            log.debug("SRTP unprotect failed: %s", exc)  # as aiortc: dropped
            return None
        self.handled += 1
        return handling

    def _handled_plainly(self, plain: bytes, arrival_time_ms: int) -> bool:
        assert self.rtp_in is not None
        try:
            return self.rtp_in.handle(plain, arrival_time_ms)
        except Exception:
            log.exception("handling an RTP packet failed; aiortc's handlers from now on")
            self.rtp_in = None
            return True  # dropped: part of it may have been handled

    def _finish_send(self, coroutine: Coroutine[Any, Any, None], pending: Any) -> None:
        """An RTCP send that waited (never on UDP): the rest in a task."""
        task = asyncio.ensure_future(self._send_rest(_Rest(coroutine, pending)))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    @staticmethod
    async def _send_rest(rest: _Rest) -> None:
        with contextlib.suppress(ConnectionError):
            await rest

    async def _finish(self, rest: _Rest) -> None:
        """The handler that waited, then what came meanwhile, in order."""
        try:
            await rest
            while self._backlog:
                handling = self._start(self._backlog.popleft())
                if handling is not None:
                    await handling
        except ConnectionError:
            self._disconnected()
        except Exception:
            self._failed()
        finally:
            self._finishing = None
            if self.active:
                self._backlog = None

    def _disconnected(self) -> None:
        """A handler found the connection gone: end aiortc's receive loop as it would."""
        self.detach()
        self._queue.put_nowait(None)  # its recv() raises ConnectionError: receivers end

    def _failed(self) -> None:
        log.exception("handling a received packet failed; back to aiortc's receive path")
        self.detach()


class _Rest:
    """Awaits the rest of a coroutine that already ran up to its first wait."""

    def __init__(self, coroutine: Coroutine[Any, Any, None], pending: Any) -> None:
        self._coroutine = coroutine
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, None]:
        coroutine, waiting_for = self._coroutine, self._pending
        while True:
            try:
                sent = yield waiting_for
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:  # the task throws in what the wait raised
                try:
                    waiting_for = coroutine.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting_for = coroutine.send(sent)
                except StopIteration:
                    return


def receive_inline(dtls: RTCDtlsTransport) -> InlineReceiver | None:
    """Handle ``dtls``'s SRTP packets in its sockets' callbacks from now on.

    Call once DTLS is connected (the peer connection's state is "connected").  None,
    and nothing changed, if it is not connected yet or aiortc/aioice changed.
    """
    if not aiortc_fastpath.install() or layout_problems():
        return None
    connection = getattr(dtls.transport, "_connection", None)
    if (
        not isinstance(connection, Connection)
        or not isinstance(getattr(connection, "_queue", None), asyncio.Queue)
        or getattr(dtls, "_rx_srtp", None) is None
        or dtls.state != "connected"
    ):
        return None
    receiver = InlineReceiver(dtls, connection)
    for protocol in getattr(connection, "_protocols", []):
        if isinstance(protocol, StunProtocol):
            receiver.attach(protocol)
    return receiver
