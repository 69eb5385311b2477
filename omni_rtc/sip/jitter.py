"""Pure receive-side RTP logic: a small reorder buffer and RFC 4733 DTMF events."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiortc.rtp import RtpPacket

DTMF_DIGITS = "0123456789*#ABCD"


def _seq_diff(a: int, b: int) -> int:
    """a - b in 16-bit sequence space, in -32768..32767."""
    return (a - b + 0x8000) % 0x10000 - 0x8000


@dataclass
class ReceiveStats:
    packets: int = 0
    duplicates: int = 0
    late: int = 0
    lost: int = 0
    reordered: int = 0
    ssrc_changes: int = 0


class ReorderBuffer:
    """Releases packets in sequence order. In-order packets leave at once; after a gap it
    holds at most ``depth`` packets waiting for the missing one, then counts it lost.
    Duplicates and packets older than the last released are dropped; a new SSRC (or a
    jump of more than ``resync`` packets) restarts the sequence."""

    def __init__(self, depth: int = 3, resync: int = 100) -> None:
        self.depth = depth
        self.resync = resync
        self.ssrc: int | None = None
        self._next: int | None = None
        self._held: dict[int, RtpPacket] = {}
        self.stats = ReceiveStats()

    def push(self, packet: RtpPacket) -> list[RtpPacket]:
        self.stats.packets += 1
        out: list[RtpPacket] = []
        if packet.ssrc != self.ssrc:
            if self.ssrc is not None:
                self.stats.ssrc_changes += 1
                out += self._release_all()
            self.ssrc = packet.ssrc
            self._next = packet.sequence_number
        assert self._next is not None
        diff = _seq_diff(packet.sequence_number, self._next)
        if abs(diff) > self.resync:
            out += self._release_all()
            self._next = packet.sequence_number
            diff = 0
        if diff < 0:
            self.stats.late += 1
            return out
        if packet.sequence_number in self._held:
            self.stats.duplicates += 1
            return out
        if diff > 0:
            self.stats.reordered += 1
        self._held[packet.sequence_number] = packet
        out += self._release_ready()
        while len(self._held) > self.depth:
            self._skip_gap()
            out += self._release_ready()
        return out

    def _release_ready(self) -> list[RtpPacket]:
        out = []
        while self._next in self._held:
            out.append(self._held.pop(self._next))
            self._next = (self._next + 1) % 0x10000
        return out

    def _skip_gap(self) -> None:
        assert self._next is not None
        first = min(self._held, key=lambda s: _seq_diff(s, self._next or 0))
        self.stats.lost += _seq_diff(first, self._next)
        self._next = first

    def _release_all(self) -> list[RtpPacket]:
        out = []
        while self._held:
            self._skip_gap()
            out += self._release_ready()
        return out


@dataclass
class _Event:
    timestamp: int
    code: int
    duration: int
    reported: bool = False


@dataclass
class DtmfDetector:
    """RFC 4733 telephone-event payloads -> one (digit, duration_ms) per key press.

    A key press is identified by its RTP timestamp: the event is reported on its first
    end packet (the two retransmitted end packets are ignored), or, if every end packet
    was lost, when the next event starts."""

    clock_rate: int = 8000
    _current: _Event | None = None
    _done: list[int] = field(default_factory=list)

    def push(self, payload: bytes, timestamp: int) -> list[tuple[str, int]]:
        if len(payload) < 4:
            return []
        code, flags = payload[0], payload[1]
        end = bool(flags & 0x80)
        duration = int.from_bytes(payload[2:4], "big")
        out: list[tuple[str, int]] = []
        if timestamp in self._done:
            return out
        current = self._current
        if current is None or current.timestamp != timestamp:
            if current is not None and not current.reported:
                out += self._report(current)
            current = self._current = _Event(timestamp, code, duration)
        current.duration = max(current.duration, duration)
        if end and not current.reported:
            out += self._report(current)
        return out

    def _report(self, event: _Event) -> list[tuple[str, int]]:
        event.reported = True
        self._done = [*self._done[-7:], event.timestamp]
        if event.code >= len(DTMF_DIGITS):
            return []
        return [(DTMF_DIGITS[event.code], event.duration * 1000 // self.clock_rate)]
