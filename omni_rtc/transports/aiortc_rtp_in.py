"""A caller's RTP packet taken from SRTP to its receiver's jitter buffer in plain calls.

aiortc hands an unprotected RTP packet through two coroutines (the DTLS transport's
``_handle_rtp_data``, the receiver's ``_handle_rtp_packet``), parses every header
extension into objects, looks up the route, the codec and the RTX table, writes a
debug line that is off and a datetime per packet.  Measured in place (thread CPU time,
8 A/V calls on one core, the caches cold between packets) that walk cost ~85 µs a
packet before the frame handler: a fifth of the server's CPU.

:meth:`RtpIn.handle` does what those two do with the common packet (version 2, a
receiver known for its SSRC and enabled, a payload type it decodes that is not RTX,
one-byte header extensions that aiortc can read), with aiortc's own state: the same
statistics for receiver reports, the same NACK generator, bandwidth estimator (REMB),
jitter buffer, PLIs and frame queue; over a stream with losses, reordering, padding,
CSRCs and a retransmission the frames, the RTCP feedback and the statistics come out as
from aiortc's handlers (``tests/unit/test_aiortc_rtp_in.py``).  Header extensions are
checked as aiortc reads them, and only abs-send-time (for the estimator) is kept.
Anything else returns False and takes aiortc's path, so aiortc also learns new SSRCs
itself.  What it leaves out: the debug log, and the per-packet datetime of
``getSynchronizationSources``, now written at most once a second per source (that API
looks back 10 s).  It runs only on the aiortc it was checked against
(``aiortc_fastpath.TESTED_AIORTC``): a later one may add a step to its handlers that the name checks
below would not see.
"""

from __future__ import annotations

import functools
import logging
import struct
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc import clock
from aiortc.codecs import depayload
from aiortc.rtcdtlstransport import RtpRouter
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver, StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    HeaderExtensions,
    HeaderExtensionsMap,
    RtcpPsfbPacket,
    pack_remb_fci,
)

from . import aiortc_fastpath

log = logging.getLogger("omni_rtc.webrtc")

_R = "_RTCRtpReceiver__"
_IDS = "_HeaderExtensionsMap__ids"
_NEEDS: dict[Callable[..., Any], tuple[str, ...]] = {
    RTCRtpReceiver.__init__: tuple(
        _R + name
        for name in (
            "active_ssrc",
            "codecs",
            "decoder_error",
            "decoder_queue",
            "decoder_thread",
            "kind",
            "jitter_buffer",
            "nack_generator",
            "remote_bitrate_estimator",
            "remote_streams",
            "rtcp_ssrc",
            "timestamp_mapper",
        )
    ),
    RTCRtpReceiver._handle_rtp_packet: (
        "_enabled",
        "abs_send_time",
        "add",
        "current_datetime",
        "is_rtx",
        "depayload",
        "_send_rtcp",
        "_send_rtcp_nack",
        "_send_rtcp_pli",
        "map",
        "put",
        "missing",
    ),
    HeaderExtensionsMap.__init__: (_IDS,),
    HeaderExtensionsMap.get: (
        "mid",
        "repaired_rtp_stream_id",
        "rtp_stream_id",
        "abs_send_time",
        "transmission_offset",
        "audio_level",
        "transport_sequence_number",
        "unpack_header_extensions",
    ),
    RtpRouter.route_rtp: ("ssrc_table", "payload_type_table"),
}
"""What this module does in aiortc's stead; if aiortc changed, it stays off."""

HEADER = struct.Struct("!BBHII")
ONE_BYTE_PROFILE = 0xBEDE
ACTIVE_SOURCE_STEP_MS = 1000
"""How often a source's "last seen" datetime is renewed (aiortc: every packet)."""


@functools.cache
def layout_problems() -> list[str]:
    """What changed in aiortc that this module relies on (checked once)."""
    return aiortc_fastpath.checked_layout(
        _NEEDS, "caller RTP goes through aiortc's handlers", tested_release=True
    )


class Packet:
    """What aiortc's receiver parts read of an :class:`~aiortc.rtp.RtpPacket`."""

    __slots__ = (
        "_data",
        "marker",
        "padding_size",
        "payload",
        "payload_type",
        "sequence_number",
        "ssrc",
        "timestamp",
    )

    def __init__(
        self,
        payload_type: int,
        marker: int,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        payload: bytes,
        padding_size: int,
    ) -> None:
        self.payload_type = payload_type
        self.marker = marker
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.payload = payload
        self.padding_size = padding_size
        self._data = b""


def parse(data: bytes, ids: HeaderExtensions) -> tuple[Packet, int | None] | None:
    """The packet and its abs-send-time, if any; None for what this module leaves to
    aiortc: what aiortc's parser refuses (not RTP version 2, a length that does not add
    up, a header extension ``ids`` names with a value it cannot read), and two-byte
    header extensions."""
    size = len(data)
    if size < 12:
        return None
    first, second, sequence_number, timestamp, ssrc = HEADER.unpack_from(data)
    pos = 12 + 4 * (first & 0x0F)
    if first >> 6 != 2 or size < pos:
        return None
    abs_send_time = None
    if first & 0x10:
        if size < pos + 4:
            return None
        profile = (data[pos] << 8) | data[pos + 1]
        end = pos + 4 + 4 * ((data[pos + 2] << 8) | data[pos + 3])
        if profile != ONE_BYTE_PROFILE or size < end:
            return None
        i = pos + 4
        while i < end:
            byte = data[i]
            if byte == 0:  # padding
                i += 1
                continue
            length = (byte & 0x0F) + 1
            value_at = i + 1
            i = value_at + length
            if i > end:
                return None
            if not _readable(byte >> 4, data[value_at:i], ids):
                return None
            x_id = byte >> 4
            if x_id == ids.abs_send_time and x_id not in (
                ids.mid,
                ids.repaired_rtp_stream_id,
                ids.rtp_stream_id,
            ):  # aiortc's order: an id of two names is the first one's
                abs_send_time = int.from_bytes(data[value_at:i], "big")
        pos = end
    padding_size = 0
    if first & 0x20:
        padding_size = data[-1]
        if not padding_size or padding_size > size - pos:
            return None
    packet = Packet(
        second & 0x7F,
        second >> 7,
        sequence_number,
        timestamp,
        ssrc,
        data[pos : size - padding_size],
        padding_size,
    )
    return packet, abs_send_time


def _readable(x_id: int, value: bytes, ids: HeaderExtensions) -> bool:
    """Whether aiortc's ``HeaderExtensionsMap.get`` reads this element (in its order)."""
    try:
        if x_id == ids.mid:
            value.decode("utf8")
        elif x_id in (ids.repaired_rtp_stream_id, ids.rtp_stream_id):
            value.decode("ascii")
        elif x_id in (ids.abs_send_time, ids.transmission_offset):
            return len(value) == 3
        elif x_id == ids.audio_level:
            return len(value) == 1
        elif x_id == ids.transport_sequence_number:
            return len(value) == 2
    except UnicodeDecodeError:
        return False
    return True


class RtpIn:
    """One DTLS transport's RTP handling for the common packet (see the module)."""

    def __init__(
        self, dtls: Any, on_wait: Callable[[Coroutine[Any, Any, None], Any], None]
    ) -> None:
        self.dtls = dtls
        self.on_wait = on_wait
        self.router: RtpRouter = dtls._rtp_router
        self.handled = 0
        self._source_seen_ms: dict[int, int] = {}

    def handle(self, data: bytes, arrival_time_ms: int) -> bool:
        """Handle an unprotected RTP packet as aiortc would; False: give it to aiortc."""
        router = self.router
        head = data[:12]
        if len(head) < 12:
            return False
        ssrc = int.from_bytes(head[8:12], "big")
        receiver: Any = router.ssrc_table.get(ssrc)
        if receiver is None or receiver not in router.payload_type_table.get(head[1] & 0x7F, ()):
            return False
        state = vars(receiver)
        codec: RTCRtpCodecParameters | None = state[_R + "codecs"].get(head[1] & 0x7F)
        if codec is None or codec.name.lower() == "rtx" or not receiver._enabled:
            return False
        remb = state[_R + "remote_bitrate_estimator"]
        parsed = parse(data, vars(self.dtls._rtp_header_extensions_map)[_IDS])
        if parsed is None:
            return False
        packet, abs_send_time = parsed
        self.handled += 1

        if remb is not None and abs_send_time is not None:
            estimate = remb.add(
                arrival_time_ms=arrival_time_ms,
                abs_send_time=abs_send_time,
                payload_size=len(packet.payload) + packet.padding_size,
                ssrc=ssrc,
            )
            rtcp_ssrc = state[_R + "rtcp_ssrc"]
            if rtcp_ssrc is not None and estimate is not None:
                self._run(
                    receiver._send_rtcp(
                        RtcpPsfbPacket(
                            fmt=RTCP_PSFB_APP,
                            ssrc=rtcp_ssrc,
                            media_ssrc=0,
                            fci=pack_remb_fci(*estimate),
                        )
                    )
                )

        seen = self._source_seen_ms.get(ssrc)
        if seen is None or not 0 <= arrival_time_ms - seen < ACTIVE_SOURCE_STEP_MS:
            self._source_seen_ms[ssrc] = arrival_time_ms
            state[_R + "active_ssrc"][ssrc] = clock.current_datetime()

        streams: dict[int, StreamStatistics] = state[_R + "remote_streams"]
        stream = streams.get(ssrc)
        if stream is None:
            stream = streams[ssrc] = StreamStatistics(codec.clockRate)
        stream.add(packet)  # type: ignore[arg-type]

        nack = state[_R + "nack_generator"]
        if nack is not None and nack.add(packet):
            self._run(receiver._send_rtcp_nack(ssrc, sorted(nack.missing)))

        if packet.payload:
            try:
                packet._data = depayload(codec, packet.payload)
            except ValueError:
                return True  # aiortc drops it the same way
        pli, frame = state[_R + "jitter_buffer"].add(packet)
        error = state[_R + "decoder_error"]
        if error.is_set():
            error.clear()
            if state[_R + "kind"] == "video":
                pli = True  # the lost picture, reported (RFC 4585 section 6.3.1.1)
        if pli:
            self._run(receiver._send_rtcp_pli(ssrc))
        if frame is not None and state[_R + "decoder_thread"]:
            frame.timestamp = state[_R + "timestamp_mapper"].map(frame.timestamp)
            state[_R + "decoder_queue"].put((codec, frame))
        return True

    def _run(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """An RTCP send, at once: on UDP it never waits; one that does goes on in
        ``on_wait(coroutine, what it waits for)``."""
        try:
            pending = coroutine.send(None)
        except (StopIteration, ConnectionError):  # aiortc's senders swallow the latter
            return
        self.on_wait(coroutine, pending)
