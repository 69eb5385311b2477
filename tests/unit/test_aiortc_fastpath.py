"""The guarded reach into aiortc's internals, driven through real receivers and senders.

These tests fail loudly when aiortc's layout changes (a new aiortc release): then
``omni_rtc/transports/aiortc_fastpath.py`` needs a look, and until it gets one calls fall
back to aiortc's own threads (same behaviour, more CPU).
"""

from __future__ import annotations

import asyncio
import datetime
import fractions
import itertools
import threading
from typing import Any

import av
import numpy as np
import pytest
from aiortc import clock, rtcrtpreceiver
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rate import RateCounter, RemoteBitrateEstimator
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtcrtpreceiver import RemoteStreamTrack, RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPacket, RtcpPsfbPacket, RtpPacket, unpack_remb_fci

from omni_rtc.media.opus import OpusDecoder, OpusEncoder
from omni_rtc.media.reply_track import OpusReplyTrack, ReplyTrack
from omni_rtc.transports import aiortc_fastpath as fastpath
from omni_rtc.transports.aiortc_fastpath import REMB_DROP_RATIO

from ..helpers import needs_tested_aiortc

pytestmark = needs_tested_aiortc

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=96)
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)


class FakeDtlsTransport:
    """What RTCRtpReceiver and RTCRtpSender use of their RTCDtlsTransport."""

    state = "connected"
    _stats_id = "transport"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def _register_rtp_receiver(self, receiver: Any, parameters: Any) -> None:
        pass

    def _unregister_rtp_receiver(self, receiver: Any) -> None:
        pass

    def _register_rtp_sender(self, sender: Any, parameters: Any) -> None:
        pass

    def _unregister_rtp_sender(self, sender: Any) -> None:
        pass

    async def _send_rtp(self, data: bytes) -> None:
        self.sent.append(data)

    def _get_stats(self) -> dict[str, Any]:
        return {}


def make_receiver(kind: str) -> tuple[RTCRtpReceiver, FakeDtlsTransport]:
    transport = FakeDtlsTransport()
    receiver = RTCRtpReceiver(kind, transport)  # type: ignore[arg-type]
    receiver._track = RemoteStreamTrack(kind=kind)
    receiver._set_rtcp_ssrc(1234)
    return receiver, transport


def opus_packets(count: int) -> list[bytes]:
    encoder = OpusEncoder(48_000, bitrate=32_000)
    t = np.arange(960 * count) / 48_000
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    return [encoder.encode(pcm[i * 1920 : (i + 1) * 1920]) for i in range(count)]


def rtp(payload: bytes, seq: int, timestamp: int, pt: int, ssrc: int = 42) -> RtpPacket:
    packet = RtpPacket(payload_type=pt, sequence_number=seq, timestamp=timestamp, ssrc=ssrc)
    packet.payload = payload
    return packet


def test_aiortc_layout_is_what_the_fast_path_expects() -> None:
    assert fastpath._layout_problems() == []
    assert fastpath.install() is True
    assert fastpath.install() is True  # idempotent
    assert rtcrtpreceiver.decoder_worker.__wrapped__ is not None  # type: ignore[attr-defined]


async def test_receiver_hands_encoded_opus_to_the_loop_not_to_a_thread() -> None:
    receiver, _ = make_receiver("audio")
    got: list[tuple[str, bytes, int, bool]] = []
    ended: list[bool] = []
    loop_thread = threading.get_ident()

    def on_frame(codec: RTCRtpCodecParameters, data: bytes, timestamp: int) -> None:
        got.append((codec.mimeType, data, timestamp, threading.get_ident() == loop_thread))

    assert fastpath.take_encoded_frames(receiver, on_frame, lambda: ended.append(True))
    fastpath.low_latency_audio(receiver)
    await receiver.receive(RTCRtpReceiveParameters(codecs=[OPUS]))
    await asyncio.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name == "audio-decoder"]
    packets = opus_packets(10)
    for i, payload in enumerate(packets):
        await receiver._handle_rtp_packet(rtp(payload, 100 + i, 5000 + 960 * i, 96), 0)
    # each packet leaves as it arrives (aiortc's buffer waits for the next one)
    assert [g[1] for g in got] == packets
    assert [g[2] for g in got] == [960 * i for i in range(10)]  # timestamps from 0
    assert all(g[0] == "audio/opus" and g[3] for g in got)
    decoder = OpusDecoder(16_000)
    assert all(len(decoder.decode(g[1])) == 640 for g in got)
    await receiver.stop()
    assert ended == [True]
    with pytest.raises(MediaStreamError):  # the track ends as it would with the thread
        await asyncio.wait_for(receiver.track.recv(), 1)


async def test_a_failing_handler_never_breaks_the_receive_loop() -> None:
    receiver, _ = make_receiver("audio")
    calls: list[int] = []

    def on_frame(codec: RTCRtpCodecParameters, data: bytes, timestamp: int) -> None:
        calls.append(timestamp)
        raise RuntimeError("boom")

    assert fastpath.take_encoded_frames(receiver, on_frame, lambda: None)
    assert fastpath.low_latency_audio(receiver)
    await receiver.receive(RTCRtpReceiveParameters(codecs=[OPUS]))
    for i, payload in enumerate(opus_packets(6)):
        await receiver._handle_rtp_packet(rtp(payload, i, 960 * i, 96), 0)
    assert len(calls) == 6  # every frame still reached it
    await receiver.stop()


async def test_caller_audio_in_order_late_packets_dropped_gaps_passed() -> None:
    receiver, _ = make_receiver("audio")
    got: list[int] = []
    assert fastpath.take_encoded_frames(receiver, lambda c, d, t: got.append(t), lambda: None)
    assert fastpath.low_latency_audio(receiver)
    await receiver.receive(RTCRtpReceiveParameters(codecs=[OPUS]))
    payload = opus_packets(1)[0]
    # (sequence number, order sent): a wrap, a late packet, a repeat, a gap, a restart
    arrivals = [(65534, 0), (65535, 1), (0, 2), (2, 4), (1, 3), (2, 4), (3, 5), (40000, 6)]
    for seq, k in arrivals:
        await receiver._handle_rtp_packet(rtp(payload, seq, 960 * k, 96), 0)
    assert [t // 960 for t in got] == [0, 1, 2, 4, 5, 6]
    await receiver.stop()


async def test_a_started_receiver_is_left_to_aiortc() -> None:
    receiver, _ = make_receiver("audio")
    await receiver.receive(RTCRtpReceiveParameters(codecs=[OPUS]))
    assert not fastpath.take_encoded_frames(receiver, lambda *_: None, lambda: None)
    await receiver.stop()


def vp8_frames(count: int, gop: int) -> list[bytes]:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = 160, 120, "yuv420p"
    codec.time_base = fractions.Fraction(1, 30)
    codec.gop_size = gop
    codec.options = {"deadline": "realtime", "lag-in-frames": "0"}
    frames = []
    for i in range(count):
        img = np.full((120, 160, 3), (i * 7) % 255, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        frames += [bytes(p) for p in codec.encode(frame)]
    return frames


async def test_video_frames_arrive_whole_and_a_key_frame_request_sends_a_pli() -> None:
    receiver, transport = make_receiver("video")
    got: list[bytes] = []
    assert fastpath.take_encoded_frames(receiver, lambda c, d, t: got.append(d), lambda: None)
    await receiver.receive(RTCRtpReceiveParameters(codecs=[VP8]))
    frames = vp8_frames(6, gop=100)
    seq = 0
    for i, frame in enumerate(frames):
        for payload in Vp8Encoder._packetize(frame, i):
            await receiver._handle_rtp_packet(rtp(payload, seq, 3000 * i, 97), 0)
            seq += 1
        if i == 3:
            transport.sent.clear()
            assert fastpath.request_key_frame(receiver)
    assert got == []  # handed over after the packets queued now (decoding evicts caches)
    await asyncio.sleep(0)
    assert got == frames[:5]  # a frame completes when the next one starts
    plis = [
        p
        for data in transport.sent
        for p in RtcpPacket.parse(data)
        if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_PLI
    ]
    assert len(plis) == 1
    assert plis[0].media_ssrc == 42
    await receiver.stop()


async def test_sender_reports_its_codec_first_and_packs_opus_packets_as_they_are() -> None:
    transport = FakeDtlsTransport()
    reply = ReplyTrack(24_000)
    sender = RTCRtpSender(reply, transport)  # type: ignore[arg-type]
    chosen: list[str] = []
    opus: list[OpusReplyTrack] = []

    def on_codec(codec: RTCRtpCodecParameters) -> None:
        chosen.append(codec.mimeType)
        opus.append(OpusReplyTrack(reply))
        sender.replaceTrack(opus[0])

    assert fastpath.on_send_codec(sender, on_codec)
    reply.push(bytes(range(256)) * 200)
    await sender.send(RTCRtpSendParameters(codecs=[OPUS]))
    await asyncio.sleep(0.25)
    await sender.stop()
    assert chosen == ["audio/opus"]
    packets = [RtpPacket.parse(d) for d in transport.sent if d[1] & 0x7F == 96]
    assert len(packets) >= 8
    steps = {b.timestamp - a.timestamp for a, b in itertools.pairwise(packets)}
    assert steps == {960}  # 20 ms at Opus's 48 kHz RTP clock
    assert opus[0].packets_encoded + opus[0].silence_reused >= len(packets)
    assert all(p.payload and p.extensions.audio_level is None for p in packets)


async def remb_reports(throttled: bool, seconds: float = 6.0) -> list[int]:
    """Bitrates a video receiver reports while every frame arrives 3 ms later than the
    one before (a queue building up: the estimator detects overuse)."""
    receiver, transport = make_receiver("video")
    if throttled:
        assert fastpath.throttle_remb(receiver)
    await receiver.receive(RTCRtpReceiveParameters(codecs=[VP8]))
    seq = 0
    for frame in range(int(seconds * 30)):
        sent_s = frame / 30
        delay_ms = 20 + (3 * (frame - 60) if frame > 60 else 0)
        for _ in range(4):  # ~1 Mbit/s in 1000-byte packets
            packet = rtp(b"\x10" + bytes(999), seq, 3000 * frame, 97)
            packet.extensions.abs_send_time = int(sent_s * (1 << 18)) & 0xFFFFFF
            await receiver._handle_rtp_packet(packet, int(sent_s * 1000) + delay_ms)
            seq += 1
    await receiver.stop()
    return [
        unpack_remb_fci(p.fci)[0]
        for data in transport.sent
        for p in RtcpPacket.parse(data)
        if isinstance(p, RtcpPsfbPacket) and p.fmt == 15
    ]


async def test_remb_is_sent_at_most_five_times_a_second_unless_the_estimate_drops() -> None:
    flood = await remb_reports(throttled=False)
    paced = await remb_reports(throttled=True)
    assert len(flood) > 100  # aiortc: a REMB with every packet while it sees overuse
    assert 2 <= len(paced) <= 6 / 0.2 + 10
    # the sender still hears the estimate fall as far as aiortc took it
    assert min(flood) < 0.95 * max(flood)
    assert min(paced) <= min(flood) / REMB_DROP_RATIO


def bursty_video(seconds: int = 40, seed: int = 7) -> list[tuple[int, int, int]]:
    """``(arrival ms, abs-send-time, bytes)`` as a receiver sees them (arrival times never
    go back; send times may: jitter reorders packets) from a 30 fps camera: 1-5 packets a
    frame, a queue building up (overuse), then draining (underuse), and a 1.5 s gap."""
    rng = np.random.default_rng(seed)
    packets = []
    for frame in range(seconds * 30):
        sent_s = frame / 30 + (1.5 if frame >= 900 else 0.0)
        queue_ms = 3 * (frame - 300) if 300 < frame < 360 else 0
        queue_ms = max(queue_ms, 180 - 6 * (frame - 360)) if 360 <= frame < 390 else queue_ms
        for i in range(int(rng.integers(1, 6))):
            arrival = sent_s * 1000 + 20 + queue_ms + rng.uniform(0, 4) + i * 0.4
            abs_send_time = int((sent_s + i * 0.0002) * (1 << 18)) & 0xFFFFFF
            packets.append((int(arrival), abs_send_time, int(rng.integers(100, 1200))))
    return sorted(packets, key=lambda packet: packet[0])


def test_the_lightened_bandwidth_estimator_gives_aiortcs_figures() -> None:
    aiortc_own = RemoteBitrateEstimator()
    light = fastpath.lighten(RemoteBitrateEstimator())
    assert isinstance(light.incoming_bitrate, fastpath.WindowRate)
    estimates = []
    packets = bursty_video()
    for arrival_ms, abs_send_time, size in packets:
        expected = aiortc_own.add(arrival_ms, abs_send_time, size, 42)
        assert light.add(arrival_ms, abs_send_time, size, 42) == expected
        assert light.incoming_bitrate.rate(arrival_ms) == aiortc_own.incoming_bitrate.rate(
            arrival_ms
        )
        if expected is not None:
            estimates.append(expected[0])
    assert len(estimates) > 100  # many estimates compared, through overuse and underuse
    assert min(estimates) < 0.8 * max(estimates)
    assert light.estimator.offset() == aiortc_own.estimator.offset()
    # a wall clock stepped back: the figures may differ for a window, then agree again
    last_ms = packets[-1][0]
    for arrival_ms in [last_ms - 300, *range(last_ms - 290, last_ms + 2000, 10)]:
        light.add(arrival_ms, 0, 500, 42)
        aiortc_own.add(arrival_ms, 0, 500, 42)
    assert light.incoming_bitrate.rate(last_ms + 2000) == aiortc_own.incoming_bitrate.rate(
        last_ms + 2000
    )


def test_aiortcs_clock_reads_the_same_time_without_datetimes() -> None:
    assert fastpath.install()
    assert clock.current_ms is fastpath.current_ms
    for _ in range(100):
        before = clock.current_datetime()
        ms, ntp = clock.current_ms(), clock.current_ntp_time()
        after = clock.current_datetime()
        low = (before - clock.NTP_EPOCH) // datetime.timedelta(milliseconds=1)
        high = (after - clock.NTP_EPOCH) // datetime.timedelta(milliseconds=1)
        assert low <= ms <= high
        assert clock.datetime_to_ntp(before) <= ntp <= clock.datetime_to_ntp(after)
        assert before <= clock.datetime_from_ntp(ntp) <= after


def test_window_rate_matches_aiortcs_rate_counter_step_by_step() -> None:
    """Equal timestamps, gaps longer than the window, resets while packets are held,
    queries between packets, and a wall clock stepped back by less than the window."""
    rng = np.random.default_rng(3)
    for window_ms in (1, 5, 1000):
        ring, light = RateCounter(window_ms, 8000), fastpath.WindowRate(window_ms, 8000)
        now_ms = latest_ms = 1_000_000
        first_ms: int | None = None  # the first packet since the last reset
        for _ in range(3000):
            step = rng.choice(["same", "near", "gap", "back", "query", "reset"])
            if step == "reset":
                ring.reset()
                light.reset()
                first_ms = None
                continue
            if step == "near":
                now_ms += int(rng.integers(1, 40))
            elif step == "gap":
                now_ms += window_ms + int(rng.integers(0, 3000))
            elif step == "back":  # never before the window's start (aiortc's ring wraps)
                start_ms = max(latest_ms - window_ms + 1, first_ms or 0)
                now_ms = max(now_ms - int(rng.integers(0, window_ms)), start_ms)
            latest_ms = max(latest_ms, now_ms)
            if step != "query":
                first_ms = now_ms if first_ms is None else first_ms
                size = int(rng.integers(1, 1500))
                ring.add(size, now_ms)
                light.add(size, now_ms)
            assert light.rate(now_ms) == ring.rate(now_ms)


def test_clock_readings_convert_as_aiortcs_datetimes_do() -> None:
    unix_epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    now_ns = 1_796_000_000 * 10**9
    for offset_ns in (0, 999, 1000, 999_999, 1_000_000, 123_456_789, 999_999_000, 999_999_999):
        time_ns = now_ns + offset_ns
        as_datetime = unix_epoch + datetime.timedelta(microseconds=time_ns // 1000)  # floored
        aiortc_ms = int((as_datetime - clock.NTP_EPOCH).total_seconds() * 1000)
        assert fastpath.ms_since_1900(time_ns) == aiortc_ms
        assert fastpath.ntp_timestamp(time_ns) == clock.datetime_to_ntp(as_datetime)


def test_an_estimator_aiortc_changed_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    changed = {RemoteBitrateEstimator.add: ("a_name_aiortc_no_longer_uses",)}
    monkeypatch.setattr(fastpath, "_LIGHTEN_NEEDS", changed)
    estimator = fastpath.lighten(RemoteBitrateEstimator())
    assert type(estimator.incoming_bitrate) is RateCounter
    assert "update_min_frame_period" not in vars(estimator.estimator)
    assert fastpath.install()  # the other fast paths stay on
