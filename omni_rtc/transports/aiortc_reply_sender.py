"""A WebRTC call's Opus reply sent on the shared 20 ms media clock, in aiortc's stead.

aiortc's ``RTCRtpSender`` runs a task per call that awaits the track for each 20 ms
frame (a timer, a future and a chain of coroutines every 20 ms), builds an ``RtpPacket``
with its header extensions, serializes it and passes it down five coroutines to the
socket.  With :func:`clock_reply` the sender's RTP task only waits to be stopped: the
process-wide :class:`~omni_rtc.media.media_clock.MediaClock` (SIP's too) calls
:meth:`ClockedReply.tick` every 20 ms, which takes the next Opus packet from the
:class:`~omni_rtc.media.reply_track.OpusReplyTrack`, writes it behind a header made once
(sequence number, timestamp and abs-send-time filled in), protects it with the call's
SRTP session and hands it to the ICE pair's socket: one timer for all calls, no
coroutine per packet.

What aiortc's sender still does: RTCP (sender reports from the counters kept here,
receiver reports and REMB it receives), ``getStats``, ``stop``.  What it no longer does
for this track: keep packets for NACKs (browsers do not NACK Opus; aiortc offers no
``nack`` feedback for audio).  The ticking ends where aiortc's task would (the track
ended, DTLS or the ICE pair gone, a failure: logged once); ``replaceTrack`` with another
:class:`OpusReplyTrack` goes on in the same RTP stream, with any other track it ends
(logged: omni-rtc itself never replaces the reply once it is sent).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
from collections.abc import Callable
from typing import Any

from aioice.ice import Connection, StunProtocol
from aiortc import clock, rtcdtlstransport
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCRtpSender, random_sequence_number
from aiortc.rtp import HeaderExtensions
from aiortc.utils import random32

from ..media.media_clock import MediaClock
from ..media.reply_track import OpusReplyTrack
from . import aiortc_fastpath

log = logging.getLogger("omni_rtc.webrtc")

_S = "_RTCRtpSender__"
_DTLS = "_RTCDtlsTransport__"
_NEEDS: dict[Callable[..., Any], tuple[str, ...]] = {
    RTCRtpSender.__init__: tuple(
        _S + name
        for name in (
            "mid",
            "rtp_exited",
            "rtp_header_extensions_map",
            "rtp_started",
            "ntp_timestamp",
            "rtp_timestamp",
            "octet_count",
            "packet_count",
        )
    ),
    RTCRtpSender.send: ("_run_rtp",),
    RTCRtpSender._run_rtp: ("abs_send_time", "mid", "current_ntp_time", "marker"),
    RTCRtpSender._next_encoded_frame: ("_enabled",),
    RTCRtpSender.replaceTrack: (_S + "track",),
    RTCDtlsTransport._send_rtp: (
        "_state",
        "_tx_srtp",
        "protect",
        _DTLS + "tx_bytes",
        _DTLS + "tx_packets",
    ),
    Connection.sendto: ("_nominated", "send_data", "remote_addr"),
    StunProtocol.send_data: ("transport", "sendto"),
}
"""What this module does in aiortc's and aioice's stead; if they changed, it stays off."""

REPLACED = "track replaced"
ABS_SEND_TIME_MARK = 0xABCDEF
"""A stand-in abs-send-time, to find where the value sits in the header made once."""


@functools.cache
def layout_problems() -> list[str]:
    """What changed in aiortc/aioice that this module relies on (checked once)."""
    return aiortc_fastpath.checked_layout(
        _NEEDS, "the reply goes through aiortc's sender task", tested_release=True
    )


def clock_reply(sender: RTCRtpSender, track: OpusReplyTrack) -> ClockedReply | None:
    """Send ``track`` (the sender's track) on the shared media clock once the sender
    starts.  Call before ``sender.send``; None, and nothing changed, if aiortc changed or
    the track's frames are not 20 ms."""
    if layout_problems() or track.reply.frame_ms != round(MediaClock.FRAME_S * 1000):
        return None
    reply = ClockedReply(sender, track)
    sender._run_rtp = reply.run  # type: ignore[method-assign]
    return reply


class ClockedReply:
    """Stands in for one ``RTCRtpSender``'s RTP task (see the module)."""

    def __init__(self, sender: RTCRtpSender, track: OpusReplyTrack) -> None:
        self.sender: Any = sender
        self.track = track
        self.sent = 0
        self.ended: str | None = None
        """Why the ticking ended (None while it runs)."""
        self._state = vars(sender)
        self._connected = rtcdtlstransport.State.CONNECTED
        self._header = bytearray()
        self._abs_send_time_at: int | None = None
        self._sequence_number = random_sequence_number()
        self._timestamp_origin = random32()
        self._done: asyncio.Future[str] | None = None
        self._next_pts = 0
        """The pts (48 kHz) the track's next packet would have: a replacement's 0."""

    async def run(self, codec: RTCRtpCodecParameters) -> None:
        """The sender's RTP task: tick on the clock until the sender stops it, or until
        aiortc's task would have ended (the track ended, DTLS or ICE gone, a failure)."""
        state = self._state
        state[_S + "rtp_started"].set()
        beat: MediaClock | None = None
        try:
            self._done = asyncio.get_running_loop().create_future()
            self._make_header(codec)
            beat = MediaClock.of_running_loop()
            beat.add(self)
            await self._done  # or cancelled by sender.stop()
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("sending the reply on the media clock failed")
        finally:
            try:
                if beat is not None:
                    await beat.remove(self)
            finally:
                if self.sender.track is self.track:
                    self.track.stop()
                state[_S + "rtp_exited"].set()

    def _end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
            if self._done is not None and not self._done.done():
                self._done.set_result(reason)

    def _make_header(self, codec: RTCRtpCodecParameters) -> None:
        """RTP header and extensions as aiortc writes them (marker set: one packet a
        frame), with the sequence number, timestamp and abs-send-time left to fill in."""
        self._abs_send_time_at = None
        extensions = HeaderExtensions()
        extensions.mid = self._state[_S + "mid"]
        extensions.abs_send_time = ABS_SEND_TIME_MARK
        profile, value = self._state[_S + "rtp_header_extensions_map"].set(extensions)
        header = bytearray(
            struct.pack(
                "!BBHLL",
                0x90 if value else 0x80,
                0x80 | (codec.payloadType or 0),
                0,
                0,
                self.sender._ssrc,
            )
        )
        if value:
            header += struct.pack("!HH", profile, len(value) >> 2) + value
            at = bytes(header).find(ABS_SEND_TIME_MARK.to_bytes(3, "big"), 12)
            self._abs_send_time_at = at if at > 0 else None
        self._header = header

    def packet(self, payload: bytes, timestamp: int, ntp: int) -> bytes:
        """The next RTP packet: the header made once, filled in, and ``payload``."""
        header = self._header
        struct.pack_into("!HL", header, 2, self._sequence_number, timestamp)
        at = self._abs_send_time_at
        if at is not None:
            header[at : at + 3] = ((ntp >> 14) & 0xFFFFFF).to_bytes(3, "big")
        return bytes(header) + payload

    def tick(self) -> None:
        """One 20 ms Opus packet out (or nothing: idle, or disabled, as aiortc's sender
        reads a disabled track and drops it); ends the ticking where aiortc's task ends."""
        if self.ended is not None:
            return
        sender = self.sender
        if sender.track is not self.track and not self._adopt(sender.track):
            return
        if self.track.readyState != "live":
            self._end("track ended")
            return
        if not sender._enabled:
            self.track.reply.take_paced()
            return
        try:
            self._send()
        except ConnectionError as exc:
            self._end(str(exc))
        except Exception:
            log.exception("sending the reply failed; its sender stops")
            self._end("failed")

    def _adopt(self, track: Any) -> bool:
        """``sender.replaceTrack``: another 20 ms Opus reply goes on in the same stream
        (the same sequence numbers and timestamp clock, which SRTP needs: a stream that
        restarts its sequence numbers fails libsrtp's replay check); anything else ends
        the ticking, with a warning, and is not sent."""
        if isinstance(track, OpusReplyTrack) and track.reply.frame_ms == self.track.reply.frame_ms:
            self._timestamp_origin = (self._timestamp_origin + self._next_pts) & 0xFFFFFFFF
            self.track = track
            return True
        log.warning(
            "the clocked reply's track was replaced by %r, which is not sent "
            "(only an OpusReplyTrack goes on the media clock)",
            track,
        )
        self._end(REPLACED)
        return False

    def _send(self) -> None:
        dtls = self.sender.transport
        if dtls._state is not self._connected:
            raise ConnectionError("Cannot send encrypted RTP, not connected")
        pair = dtls.transport._connection._nominated.get(1)
        socket = getattr(pair.protocol, "transport", None) if pair is not None else None
        if socket is None:
            raise ConnectionError("Cannot send data, not connected")
        taken = self.track.take_packet()
        if taken is None:
            return
        payload, pts = taken
        self._next_pts = pts + self.track.reply.frame_samples * self.track._pts_scale
        timestamp = (self._timestamp_origin + pts) & 0xFFFFFFFF
        ntp = clock.current_ntp_time()
        data = dtls._tx_srtp.protect(self.packet(payload, timestamp, ntp))
        socket.sendto(data, pair.remote_addr)
        dtls_state = vars(dtls)
        dtls_state[_DTLS + "tx_bytes"] += len(data)
        dtls_state[_DTLS + "tx_packets"] += 1
        state = self._state
        state[_S + "ntp_timestamp"] = ntp
        state[_S + "rtp_timestamp"] = timestamp
        state[_S + "octet_count"] += len(payload)
        state[_S + "packet_count"] += 1
        self._sequence_number = (self._sequence_number + 1) & 0xFFFF
        self.sent += 1
