"""One call's RTP/AVP media: an asyncio UDP socket from the port range, decode + reorder
on the way in, paced ReplyTrack frames encoded and packetized on the way out."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from aiortc.rtp import RtpPacket, is_rtcp

from omni_rtc.media.media_clock import MediaClock
from omni_rtc.media.reply_track import ReplyTrack
from omni_rtc.sip.codecs import AudioDecoder, AudioEncoder
from omni_rtc.sip.jitter import DtmfDetector, ReorderBuffer
from omni_rtc.sip.ports import PortPool
from omni_rtc.sip.sdp import MediaChoice

log = logging.getLogger("omni_rtc.sip.media")

COMFORT_NOISE_PT = 13
Address = tuple[str, int]


@dataclass
class MediaStats:
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    ignored: int = 0
    """RTCP, comfort noise, unknown payload types, unparseable datagrams."""
    dtmf: int = 0
    first_packet_from: Address | None = None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: RtpEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.endpoint._datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("RTP socket error: %s", exc)


class RtpEndpoint:
    """Open (bind a port pair) before answering; :meth:`configure` with the negotiated
    media once it is known (again on every re-INVITE); :meth:`close` releases it all."""

    def __init__(
        self,
        ports: PortPool,
        host: str,
        *,
        on_audio: Callable[[bytes, int], None],
        on_dtmf: Callable[[str, int], None],
        idle: str = "silence",
        reorder_depth: int = 3,
    ) -> None:
        self._ports = ports
        self._host = host
        self._on_audio = on_audio
        self._on_dtmf = on_dtmf
        self._idle = idle
        self._reorder_depth = reorder_depth
        self.port = 0
        self.choice: MediaChoice | None = None
        self.reply_track: ReplyTrack | None = None
        self.stats = MediaStats()
        self.remote: Address | None = None
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._decoder: AudioDecoder | None = None
        self._encoder: AudioEncoder | None = None
        self._reorder = ReorderBuffer(reorder_depth)
        self._dtmf = DtmfDetector()
        self._clock: MediaClock | None = None
        self._ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._ts_base = secrets.randbits(32)
        self._marker = True
        self.closed = False

    @property
    def audio_rate(self) -> int:
        return self.choice.codec.audio_rate if self.choice else 0

    async def open(self) -> int:
        self.port, self._rtp, self._rtcp = await self._ports.bind(
            self._host, lambda: _Protocol(self)
        )
        return self.port

    def configure(self, choice: MediaChoice) -> None:
        """Apply negotiated media: codec (new or changed), remote address, direction."""
        previous = self.choice
        self.choice = choice
        if previous is None or previous.codec != choice.codec:
            self._decoder = AudioDecoder(choice.codec)
            if self.reply_track is None:
                self.reply_track = ReplyTrack(sample_rate=choice.codec.audio_rate, idle=self._idle)
            self._encoder = AudioEncoder(choice.codec, self.reply_track.sample_rate)
            self._dtmf = DtmfDetector()
        sdp_remote = (choice.remote_address, choice.remote_port)
        if previous is None or (previous.remote_address, previous.remote_port) != sdp_remote:
            self.remote = sdp_remote
        if self._clock is None and not self.closed:
            self._clock = MediaClock.of_running_loop()
            self._clock.add(self)

    @property
    def on_hold(self) -> bool:
        return self.choice is not None and not self.choice.sending

    # ----------------------------------------------------------------- receive

    def _datagram(self, data: bytes, addr: Address) -> None:
        choice = self.choice
        if choice is None or self.closed or is_rtcp(data):
            self.stats.ignored += 1
            return
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            self.stats.ignored += 1
            return
        pt = packet.payload_type
        if pt not in (choice.payload_type, choice.dtmf_payload_type, COMFORT_NOISE_PT):
            self.stats.ignored += 1
            return
        self.stats.packets_in += 1
        self.stats.bytes_in += len(data)
        if self.stats.first_packet_from is None:
            self.stats.first_packet_from = addr
        if addr != self.remote:  # symmetric RTP: answer where the packets come from
            self.remote = addr
        if not choice.receiving:
            return
        for ready in self._reorder.push(packet):
            self._deliver(ready, choice)

    def _deliver(self, packet: RtpPacket, choice: MediaChoice) -> None:
        pt = packet.payload_type
        if pt == choice.payload_type and self._decoder is not None:
            pcm = self._decoder.decode(packet.payload)
            if pcm:
                try:
                    self._on_audio(pcm, self._decoder.rate)
                except Exception:
                    log.exception("caller audio callback failed")
        elif pt == choice.dtmf_payload_type:
            for digit, duration in self._dtmf.push(packet.payload, packet.timestamp):
                self.stats.dtmf += 1
                try:
                    self._on_dtmf(digit, duration)
                except Exception:
                    log.exception("DTMF callback failed")
        else:
            self.stats.ignored += 1  # comfort noise: silence is what we'd play anyway

    # ----------------------------------------------------------------- send

    def tick(self) -> None:
        """One 20 ms frame of the reply (or silence) out, on the shared clock's beat."""
        track = self.reply_track
        if track is None or track.readyState != "live":
            return
        frame = track.take_frame()
        choice, encoder, remote = self.choice, self._encoder, self.remote
        if choice is None or encoder is None or remote is None or self._rtp is None:
            return
        if not choice.sending:
            self._marker = True
            return
        try:
            payloads = encoder.encode(frame)
        except (ValueError, OSError) as exc:
            log.debug("encode failed: %s", exc)
            return
        clock, rate = choice.codec.clock_rate, track.sample_rate
        timestamp = (self._ts_base + (frame.pts or 0) * clock // rate) & 0xFFFFFFFF
        for payload in payloads:
            packet = RtpPacket(
                payload_type=choice.payload_type,
                marker=1 if self._marker else 0,
                sequence_number=self._seq,
                timestamp=timestamp,
                ssrc=self._ssrc,
                payload=payload,
            )
            data = packet.serialize()
            self._rtp.sendto(data, remote)
            self._marker = False
            self._seq = (self._seq + 1) & 0xFFFF
            self.stats.packets_out += 1
            self.stats.bytes_out += len(data)

    # ----------------------------------------------------------------- teardown

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.reply_track is not None:
            self.reply_track.stop()
        if self._clock is not None:
            await self._clock.remove(self)
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        if self.port:
            self._ports.release(self.port)

    @property
    def reorder_stats(self) -> object:
        return self._reorder.stats
