"""RTP receive logic (reorder, DTMF), PyAV codecs, and the RTP endpoint on loopback."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest
from aiortc.rtp import RtpPacket

from omni_rtc.sip.codecs import AudioDecoder, AudioEncoder, pcm_frame
from omni_rtc.sip.jitter import DtmfDetector, ReorderBuffer
from omni_rtc.sip.media import RtpEndpoint
from omni_rtc.sip.ports import PortPool, parse_port_range
from omni_rtc.sip.sdp import G722, OPUS, PCMA, PCMU, Codec, MediaChoice
from tests.helpers import sine_pcm, wait_for


def pkt(seq: int, ts: int = 0, ssrc: int = 1, pt: int = 0, payload: bytes = b"x") -> RtpPacket:
    return RtpPacket(payload_type=pt, sequence_number=seq % 65536, timestamp=ts, ssrc=ssrc,
                     payload=payload)  # fmt: skip


def seqs(packets: list[RtpPacket]) -> list[int]:
    return [p.sequence_number for p in packets]


def test_reorder_buffer_orders_drops_duplicates_and_counts_loss() -> None:
    buf = ReorderBuffer(depth=3)
    out: list[RtpPacket] = []
    for s in [65534, 65535, 1, 0, 0, 2, 65533, 5, 6, 7, 8]:
        out += buf.push(pkt(s))
    assert seqs(out) == [65534, 65535, 0, 1, 2, 5, 6, 7, 8]
    assert buf.stats.duplicates + buf.stats.late == 2
    assert buf.stats.lost == 2
    # a new SSRC restarts the sequence at once
    assert seqs(buf.push(pkt(4000, ssrc=2))) == [4000]
    assert buf.stats.ssrc_changes == 1


def test_dtmf_one_event_per_key_press() -> None:
    det = DtmfDetector()
    events = []

    def ev(code: int, end: bool, duration: int) -> bytes:
        return bytes([code, (0x80 if end else 0) | 10]) + duration.to_bytes(2, "big")

    for payload in [ev(1, False, 160), ev(1, False, 320), ev(1, True, 800), ev(1, True, 800),
                    ev(1, True, 800)]:  # fmt: skip
        events += det.push(payload, 1000)
    for payload in [ev(11, False, 160), ev(11, False, 480)]:  # end packets all lost
        events += det.push(payload, 5000)
    events += det.push(ev(10, True, 400), 9000)
    events += det.push(b"\x01", 9999)
    assert events == [("1", 100), ("#", 60), ("*", 50)]


@pytest.mark.parametrize("codec", [PCMU, PCMA, G722, OPUS], ids=lambda c: c.name)
def test_codec_round_trip_keeps_a_tone(codec: Codec) -> None:
    rate = codec.audio_rate
    enc, dec = AudioEncoder(codec, rate), AudioDecoder(codec)
    pcm = sine_pcm(1.0, rate, hz=440)
    frame_bytes = rate // 50 * 2
    out = b""
    for i in range(0, len(pcm), frame_bytes):
        for payload in enc.encode(pcm_frame(pcm[i : i + frame_bytes], rate)):
            if codec in (PCMU, PCMA):
                assert len(payload) == 160
            if codec is G722:
                assert len(payload) == 160  # 320 samples at 16 kHz in 160 bytes
            out += dec.decode(payload)
    assert dec.rate == rate
    x = np.frombuffer(out, dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(x[len(x) // 2 :]))
    peak_hz = np.argmax(spectrum) * rate / (len(x) - len(x) // 2)
    assert abs(peak_hz - 440) < 10, peak_hz
    assert dec.decode(b"\xff") == b"" or codec in (PCMU, PCMA, G722)


def test_port_range_parsing_and_pool() -> None:
    assert parse_port_range("40000-40999") == (40000, 40999)
    for bad in ("40000", "9-10", "50000-40000", "a-b"):
        with pytest.raises(ValueError, match="rtp-ports"):
            parse_port_range(bad)
    assert PortPool(41001, 41010).capacity == 4


def choice(port: int, codec: Codec = PCMU, pt: int = 0, direction: str = "sendrecv") -> MediaChoice:
    return MediaChoice(codec, pt, 101, "127.0.0.1", port, direction)


async def test_endpoint_receives_sends_latches_holds_and_cleans_up() -> None:
    pool = PortPool(42000, 42010)
    audio: list[tuple[bytes, int]] = []
    dtmf: list[tuple[str, int]] = []
    ep = RtpEndpoint(pool, "127.0.0.1", on_audio=lambda p, r: audio.append((p, r)),
                     on_dtmf=lambda d, ms: dtmf.append((d, ms)))  # fmt: skip
    port = await ep.open()
    assert pool.in_use == 1
    sdp_peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the address in the SDP
    sdp_peer.bind(("127.0.0.1", 0))
    nat_peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # where packets really come from
    nat_peer.bind(("127.0.0.1", 0))
    nat_peer.setblocking(False)
    sdp_peer.setblocking(False)
    try:
        ep.configure(choice(sdp_peer.getsockname()[1], codec=G722, pt=9))
        assert ep.reply_track is not None
        assert ep.reply_track.sample_rate == 16000
        loop = asyncio.get_running_loop()
        first = await loop.sock_recv(sdp_peer, 2048)  # before any packet: the SDP address
        assert RtpPacket.parse(first).payload_type == 9
        enc = AudioEncoder(G722, 16000)
        tone = sine_pcm(0.2, 16000)
        payloads = [enc.encode(pcm_frame(tone[i : i + 640], 16000))[0] for i in range(0, 6400, 640)]
        order = [0, 2, 1, 3, 3, 4, 6, 7, 8, 9]  # reordered, a duplicate, packet 5 lost
        for i in order:
            data = pkt(100 + i, ts=i * 160, ssrc=7, pt=9, payload=payloads[i]).serialize()
            nat_peer.sendto(data, ("127.0.0.1", port))
        nat_peer.sendto(pkt(200, ssrc=7, pt=13, payload=b"\x40").serialize(), ("127.0.0.1", port))
        nat_peer.sendto(b"\x80\xc8\x00\x06" + bytes(24), ("127.0.0.1", port + 1))  # RTCP
        nat_peer.sendto(b"\x80\xc9\x00\x01" + bytes(4), ("127.0.0.1", port))  # RTCP on RTP port
        nat_peer.sendto(b"\x00garbage", ("127.0.0.1", port))
        for seq, (code, end) in enumerate(((5, False), (5, True), (5, True))):
            payload = bytes([code, 0x80 if end else 0, 3, 32])
            nat_peer.sendto(pkt(300 + seq, ts=5000, ssrc=8, pt=101, payload=payload).serialize(),
                            ("127.0.0.1", port))  # fmt: skip
        await wait_for(lambda: len(audio) >= 9 and bool(dtmf), timeout=2)
        assert {r for _, r in audio} == {16000}
        assert all(len(p) == 640 for p, _ in audio)
        assert dtmf == [("5", 100)]
        # symmetric RTP: replies now go where the packets came from
        got = await asyncio.wait_for(loop.sock_recv(nat_peer, 2048), 1.0)
        reply = RtpPacket.parse(got)
        nxt = RtpPacket.parse(await asyncio.wait_for(loop.sock_recv(nat_peer, 2048), 1.0))
        assert nxt.sequence_number == (reply.sequence_number + 1) % 65536
        assert (nxt.timestamp - reply.timestamp) % 2**32 == 160  # 20 ms of G.722 = 160 ticks
        assert nxt.ssrc == reply.ssrc
        # hold: nothing is sent
        ep.configure(choice(sdp_peer.getsockname()[1], codec=G722, pt=9, direction="recvonly"))
        await asyncio.sleep(0.06)
        while True:
            try:
                nat_peer.recv(2048)
            except BlockingIOError:
                break
        sent = ep.stats.packets_out
        await asyncio.sleep(0.1)
        assert ep.stats.packets_out == sent
    finally:
        await ep.close()
        sdp_peer.close()
        nat_peer.close()
    assert pool.in_use == 0
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
