"""Calls through the media fast path (omni_rtc/transports/aiortc_fastpath.py), end to end.

An Opus peer gets the reply as Opus packets encoded by the bridge, its audio decoded by
libopus on the loop and its camera decoded only for the sampler; a peer that only offers
G.711 still hears the reply (aiortc encodes frames) and is still heard by the model.
"""

from __future__ import annotations

import asyncio

from aiortc import RTCRtpSender

from omni_rtc.media.reply_track import OpusReplyTrack
from omni_rtc.transports.webrtc import WebRtcCall
from tests.conftest import run_bridge
from tests.media import best_circular_correlation, envelope, load_pcm48
from tests.peer import LoopingPcmTrack, PatternVideoTrack, PeriodicKeyVp8Track, TestPeer


def to16k(pcm48: bytes) -> bytes:
    from omni_rtc.emulator.replies import resample_pcm16

    return resample_pcm16(pcm48, 48_000, 16_000)


def heard(peer: TestPeer, level_db: float = -50.0) -> float:
    return sum(0.02 for _, db in peer.levels if db > level_db)


def only_codec(peer: TestPeer, mime_type: str) -> None:
    codecs = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == mime_type]
    for transceiver in peer.pc.getTransceivers():
        if transceiver.kind == "audio":
            transceiver.setCodecPreferences(codecs)


def assert_both_ways(peer: TestPeer, speech48: bytes, at_model16: bytes) -> None:
    """The peer heard the reply, and its speech reached the model intact."""
    assert heard(peer) > 0.5
    reference = envelope(to16k(speech48), 16_000)
    r = best_circular_correlation(reference, envelope(at_model16, 16_000))
    assert r >= 0.8, f"envelope correlation {r:.2f}"


async def one_call(bridge, peer: TestPeer) -> WebRtcCall:  # type: ignore[no-untyped-def]
    await peer.call()
    await peer.wait_connected()
    calls = bridge.manager.list()
    assert len(calls) == 1
    call = calls[0]
    assert isinstance(call, WebRtcCall)
    await peer.wait_message(
        lambda m: m.get("type") == "transcript" and m["role"] == "assistant" and m["final"],
        timeout=20,
    )
    await asyncio.sleep(1.0)  # let the echo play
    return call


async def test_opus_peer_gets_packets_encoded_here_and_its_camera_sampled(speech_wav) -> None:
    speech = load_pcm48(speech_wav)
    async with run_bridge() as bridge:
        peer = TestPeer(bridge.url, LoopingPcmTrack(speech), PatternVideoTrack(640, 480, fps=30))
        try:
            call = await one_call(bridge, peer)
            opus = call._opus_track
            assert isinstance(opus, OpusReplyTrack)
            assert opus.packets_encoded + opus.silence_reused > 50
            # sent on the shared media clock, not by aiortc's sender task
            assert call._clocked_reply is not None
            assert call._clocked_reply.sent >= opus.packets_encoded + opus.silence_reused - 2
            [decoder] = call.video_decoders
            stats = decoder.gate.stats
            assert stats.decoded > 0
            assert stats.decode_errors == 0
            # the caller's packets went from the socket straight to aiortc's receivers
            [inline] = call._inline.values()
            assert inline is not None
            assert inline.active
            assert inline.handled > 100
        finally:
            await peer.close()
        record = bridge.emulator.sessions[0]
    assert_both_ways(peer, speech, bytes(record.audio))
    assert record.images
    assert all(i.accepted for i in record.images)


async def test_an_overloaded_bridge_samples_a_periodic_camera_at_its_key_frames(
    speech_wav,
) -> None:
    """Lean (the loop nearly full): key frames only, an image a second; then 2 again."""
    speech = load_pcm48(speech_wav)
    async with run_bridge() as bridge:
        camera = PeriodicKeyVp8Track(fps=30, key_every=30)  # cannot answer PLIs
        peer = TestPeer(bridge.url, LoopingPcmTrack(speech), camera)
        try:
            call = await one_call(bridge, peer)
            [decoder] = call.video_decoders
            stats = decoder.gate.stats
            images = bridge.emulator.sessions[0].images
            load = bridge.manager.load  # (no probe here: run_bridge turns the guard off,
            # so lean is set by hand; tests/unit/test_loop_load.py tests when it is set)

            async def over(seconds: float) -> tuple[int, int, int]:
                """Images sent, frames decoded and key frames seen in ``seconds``."""
                before = len(images), stats.decoded, stats.key_frames
                await asyncio.sleep(seconds)
                after = len(images), stats.decoded, stats.key_frames
                return after[0] - before[0], after[1] - before[1], after[2] - before[2]

            await asyncio.sleep(2.0)  # three key frames: its period is known
            full_images, full_decoded, _ = await over(4.0)
            load.cameras.every = True
            await asyncio.sleep(1.0)
            lean_images, lean_decoded, lean_keys = await over(4.0)
            load.cameras.every = False
            await asyncio.sleep(1.5)
            again_images, again_decoded, _ = await over(4.0)
        finally:
            await peer.close()
    assert 7 <= full_images <= 9  # 2 a second...
    assert full_decoded >= 40  # ...decoding from each key frame to the second image
    assert 3 <= lean_images <= 5  # 1 a second...
    assert lean_decoded <= lean_keys <= 5  # ...from key frames only
    assert lean_images <= lean_decoded + 1  # every image is one of them (+1: the window's edge)
    assert 7 <= again_images <= 9
    assert again_decoded >= 40
    assert stats.decode_errors == 0


async def test_a_busy_bridge_decodes_cameras_light_and_keeps_every_image(speech_wav) -> None:
    """Light (the loop busy): no loop filter on inter frames from the next key frame on,
    still 2 images a second; then the loop filter again, from the next key frame."""
    speech = load_pcm48(speech_wav)
    async with run_bridge() as bridge:
        camera = PeriodicKeyVp8Track(fps=30, key_every=30)
        peer = TestPeer(bridge.url, LoopingPcmTrack(speech), camera)
        try:
            call = await one_call(bridge, peer)
            [decoder] = call.video_decoders
            images = bridge.emulator.sessions[0].images
            load = bridge.manager.load  # (set by hand, as lean above)
            assert not decoder.decoding_light
            load.light_cameras.on = True
            await asyncio.sleep(1.5)  # a key frame came
            assert decoder.decoding_light
            before = len(images)
            await asyncio.sleep(4.0)
            light_images = len(images) - before
            load.light_cameras.on = False
            await asyncio.sleep(1.5)
            assert not decoder.decoding_light
        finally:
            await peer.close()
    assert 7 <= light_images <= 9
    assert decoder.gate.stats.decode_errors == 0
    assert all(i.accepted for i in images)


async def test_g711_peer_is_heard_and_hears_the_reply(speech_wav) -> None:
    speech = load_pcm48(speech_wav)
    async with run_bridge() as bridge:
        peer = TestPeer(bridge.url, LoopingPcmTrack(speech))
        only_codec(peer, "audio/PCMU")
        try:
            call = await one_call(bridge, peer)
            assert call._opus_track is None  # aiortc encodes the ReplyTrack's frames
            assert "PCMU" in peer.pc.remoteDescription.sdp
        finally:
            await peer.close()
        record = bridge.emulator.sessions[0]
    assert_both_ways(peer, speech, bytes(record.audio))
