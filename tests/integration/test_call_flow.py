"""Calls through the bridge with an aiortc peer: audio, video, barge-in, push-to-talk, errors."""

from __future__ import annotations

import asyncio
import re
import time

import numpy as np
import pytest

from omni_rtc.emulator import EmulatorConfig
from tests.conftest import run_bridge
from tests.helpers import wait_for
from tests.media import best_circular_correlation, envelope, load_pcm48
from tests.peer import LoopingPcmTrack, PatternVideoTrack, TestPeer


def to16k(pcm48: bytes) -> bytes:
    from omni_rtc.emulator.replies import resample_pcm16

    return resample_pcm16(pcm48, 48_000, 16_000)


async def wait_states(peer: TestPeer, expected: list[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while [m["value"] for m in peer.of_type("state")][: len(expected)] != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"states {[m['value'] for m in peer.of_type('state')]}")
        await asyncio.sleep(0.05)


def heard(peer: TestPeer, since: float = 0.0, level_db: float = -50.0) -> float:
    """Seconds of reply audio above ``level_db`` the peer received after ``since``."""
    return sum(0.02 for t, db in peer.levels if t >= since and db > level_db)


async def test_hands_free_call_with_speech_and_camera(speech_wav) -> None:
    speech = load_pcm48(speech_wav)
    async with run_bridge() as bridge:
        peer = TestPeer(bridge.url, LoopingPcmTrack(speech), PatternVideoTrack(640, 480, fps=10))
        try:
            answer = await peer.call()
            assert answer["type"] == "answer"
            await peer.wait_connected()
            await peer.wait_message(
                lambda m: m.get("type") == "transcript" and m["role"] == "assistant" and m["final"],
                timeout=20,
            )
            await wait_states(peer, ["listening", "thinking", "speaking", "listening"])
        finally:
            await peer.close()
        record = bridge.emulator.sessions[0]

    # the emulator got the caller's speech as 16 kHz pcm16, recognisably the same signal
    reference = envelope(to16k(speech), 16_000)
    received = envelope(bytes(record.audio), 16_000)
    r = best_circular_correlation(reference, received)
    assert r >= 0.8, f"envelope correlation {r:.2f}"
    control = best_circular_correlation(reference[::-1], received)
    assert control < r - 0.2
    # in 40 ms appends by default (16 kHz pcm16: 1280 bytes)
    assert set(record.append_bytes) == {1280}, set(record.append_bytes)
    # JPEG frames at <= 2 fps, valid, none before audio
    images = record.images
    assert images, "no camera frames reached the model"
    assert all(i.accepted for i in images), [i.error for i in images]
    assert images[0].at >= record.first_audio_at
    gaps = np.diff([i.at for i in images])
    assert np.all(gaps >= 0.5 - 0.05), gaps
    assert (images[0].width, images[0].height) == (640, 480)
    # the peer heard the echo, and the data channel told the story in order
    assert heard(peer) > 0.5
    states = [m["value"] for m in peer.of_type("state")]
    assert states[:4] == ["listening", "thinking", "speaking", "listening"]
    user = [m for m in peer.of_type("transcript") if m["role"] == "user"]
    assistant = [m for m in peer.of_type("transcript") if m["role"] == "assistant"]
    assert user
    assert user[0]["final"]
    assert "s of speech" in user[0]["text"]
    assert any(not m["final"] for m in assistant)
    final = next(m for m in assistant if m["final"])
    assert final["text"].startswith("I heard ")
    assert "image" in final["text"]
    assert peer.of_type("call")[0]["mode"] == "server_vad"


@pytest.mark.parametrize("chunk_ms", [20, 100])
async def test_caller_audio_reaches_the_model_in_chunks_of_the_configured_size(
    speech_wav, chunk_ms: int
) -> None:
    async with run_bridge(["--chunk-ms", str(chunk_ms)]) as bridge:
        peer = TestPeer(bridge.url, LoopingPcmTrack(load_pcm48(speech_wav)))
        try:
            await peer.call()
            await peer.wait_connected()
            sessions = bridge.emulator.sessions
            await wait_for(lambda: bool(sessions) and sessions[0].audio_seconds_total >= 1.0, 20)
        finally:
            await peer.close()
        sizes = set(bridge.emulator.sessions[0].append_bytes)
    assert sizes == {16_000 * chunk_ms // 1000 * 2}, sizes


def silent_from(
    peer: TestPeer, since: float, level_db: float = -50.0, hold_s: float = 0.3
) -> float | None:
    """First time after ``since`` from which the reply stays below ``level_db`` for ``hold_s``."""
    quiet_start = None
    for t, db in peer.levels:
        if t < since:
            continue
        if db <= level_db:
            quiet_start = quiet_start if quiet_start is not None else t
            if t - quiet_start >= hold_s:
                return quiet_start
        else:
            quiet_start = None
    return None


async def test_barge_in_silences_a_queued_reply_at_once(speech_wav) -> None:
    # An 8 s tone sent 4x faster than real time: the whole reply sits queued in the bridge
    # when the caller's next utterance (the loop) starts over it.
    emulator = EmulatorConfig(reply="tone", tone_seconds=8.0, reply_speed=4.0, reply_delay_s=0.05)
    async with run_bridge(emulator=emulator) as bridge:
        peer = TestPeer(bridge.url, LoopingPcmTrack(load_pcm48(speech_wav)))
        try:
            await peer.call()
            await peer.wait_connected()
            t_interrupted, _ = await peer.wait_message(
                lambda m: m.get("type") == "interrupted", timeout=20
            )
            await asyncio.sleep(1.0)
        finally:
            await peer.close()
        metrics = bridge.metrics.render().decode()
    tone_started = next(t for t, db in peer.levels if db > -30)
    assert tone_started < t_interrupted
    quiet = silent_from(peer, t_interrupted)
    assert quiet is not None, "reply kept playing after the barge-in"
    assert quiet - t_interrupted <= 0.3, (
        f"reply audio stopped {quiet - t_interrupted:.3f} s after barge-in"
    )
    assert t_interrupted - tone_started < 4.0  # it was cut: the tone lasts 8 s
    assert "omni_rtc_barge_ins_total 1.0" in metrics


async def test_push_to_talk_sends_audio_only_while_pressed(speech_wav) -> None:
    async with run_bridge() as bridge:
        peer = TestPeer(bridge.url, LoopingPcmTrack(load_pcm48(speech_wav)))
        try:
            await peer.call(mode="manual")
            await peer.wait_connected()
            assert peer.of_type("call")[0]["mode"] == "manual"
            await asyncio.sleep(1.0)
            record = bridge.emulator.sessions[0]
            assert len(record.audio) == 0  # not pressed: nothing goes to the model
            peer.send({"type": "ptt", "action": "start"})
            await asyncio.sleep(2.5)
            peer.send({"type": "ptt", "action": "stop"})
            _, final = await peer.wait_message(
                lambda m: m.get("type") == "transcript" and m["role"] == "assistant" and m["final"]
            )
            await wait_states(peer, ["listening", "thinking", "speaking", "listening"])
            pressed_audio_s = len(record.audio) / 2 / 16_000
            await asyncio.sleep(1.0)
            assert len(record.audio) / 2 / 16_000 == pressed_audio_s  # released: nothing more
            # a press too short to be an utterance is refused politely
            peer.send({"type": "ptt", "action": "start"})
            await asyncio.sleep(0.05)
            peer.send({"type": "ptt", "action": "stop"})
            _, short = await peer.wait_message(lambda m: m.get("type") == "error")
        finally:
            await peer.close()
    assert 2.3 <= pressed_audio_s <= 2.8
    assert final["text"].startswith("I heard 2.")
    assert record.client_events.count("input_audio_buffer.commit") == 1
    assert "Too short" in short["message"]
    assert heard(peer) > 1.0


async def test_push_to_talk_message_in_hands_free_call_is_refused(speech_wav) -> None:
    async with run_bridge() as bridge:
        peer = TestPeer(bridge.url, LoopingPcmTrack(load_pcm48(speech_wav)))
        try:
            await peer.call()
            await peer.wait_connected()
            peer.send({"type": "ptt", "action": "start"})
            _, error = await peer.wait_message(lambda m: m.get("type") == "error")
            peer.channel.send("not json")
            await peer.wait_message(lambda m: m.get("type") == "error" and "JSON" in m["message"])
            peer.send({"type": "ptt", "action": "sideways"})
            await peer.wait_message(lambda m: m.get("type") == "error" and "action" in m["message"])
        finally:
            await peer.close()
        record = bridge.emulator.sessions[0]
    assert "hands-free" in error["message"]
    assert "input_audio_buffer.commit" not in record.client_events


async def test_upstream_error_reaches_the_peer(speech_wav) -> None:
    emulator = EmulatorConfig(max_image_bytes=2_000, reply_delay_s=0.05)
    async with run_bridge(["--jpeg-max-bytes", "60000"], emulator=emulator) as bridge:
        peer = TestPeer(bridge.url, LoopingPcmTrack(load_pcm48(speech_wav)), PatternVideoTrack())
        try:
            await peer.call()
            await peer.wait_connected()
            _, error = await peer.wait_message(lambda m: m.get("type") == "error")
        finally:
            await peer.close()
    assert error["message"].startswith("Model service: Image too large")


@pytest.mark.parametrize(
    "fault",
    [
        {"drop_after_s": 3.0},
        {"drop_mid_reply": True},
        {"partition_after_s": 3.0},
    ],
    ids=["drop", "drop-mid-reply", "partition"],
)
async def test_upstream_loss_reconnects_and_the_caller_keeps_talking(speech_wav, fault) -> None:
    emulator = EmulatorConfig(reply_delay_s=0.05, fault_sessions=1, **fault)
    async with run_bridge(emulator=emulator) as bridge:
        peer = TestPeer(bridge.url, LoopingPcmTrack(load_pcm48(speech_wav)))
        try:
            await peer.call()
            await peer.wait_connected()
            lost_at, _ = await peer.wait_message(
                lambda m: m.get("type") == "notice" and "reconnecting" in m["message"], timeout=20
            )
            back_at, _ = await peer.wait_message(
                lambda m: m.get("type") == "notice" and "Reconnected" in m["message"], timeout=10
            )
            # the caller goes on talking to the model: a full turn on the new session
            _, reply = await peer.wait_message(
                lambda m: (
                    m.get("type") == "transcript"
                    and m["role"] == "assistant"
                    and m["final"]
                    and len(bridge.emulator.sessions) == 2
                    and bridge.emulator.sessions[1].responses >= 1
                ),
                timeout=30,
            )
            assert bridge.manager.active == 1
        finally:
            await peer.close()
        metrics = bridge.metrics.render().decode()
        first, second = bridge.emulator.sessions
    assert not peer.of_type("ended")[:-1]
    assert not [m for m in peer.of_type("error") if "ended the session" in m["message"]]
    assert second.audio_seconds_total > 1.0
    # the first new session was open within 2 s of losing the old one (a partition is
    # noticed by the keepalive first: ping every 2 s, no pong within 2 s)
    gap = second.started - (first.started + fault.get("partition_after_s", 0))
    assert back_at - lost_at < 2.0, back_at - lost_at
    if "partition_after_s" in fault:
        assert gap < 4.0 + 2.0 + 1.0, gap
    assert re.search(r"^omni_rtc_upstream_reconnects_total 1\.0$", metrics, re.M)
    assert reply["text"].startswith("I heard ")


async def test_upstream_gone_for_good_ends_the_call_with_a_reason(speech_wav) -> None:
    emulator = EmulatorConfig(drop_after_s=1.5, reply_delay_s=0.05)
    async with run_bridge(["--reconnect-seconds", "2"], emulator=emulator) as bridge:
        peer = TestPeer(bridge.url, LoopingPcmTrack(load_pcm48(speech_wav)))
        try:
            await peer.call()
            await peer.wait_connected()
            await peer.wait_message(lambda m: m.get("type") == "notice", timeout=10)
            await bridge.emulator.stop()  # the service is unreachable from now on
            _, error = await peer.wait_message(lambda m: m.get("type") == "error", timeout=10)
            _, ended = await peer.wait_message(lambda m: m.get("type") == "ended", timeout=5)
            deadline = time.monotonic() + 5
            while (
                peer.pc.connectionState not in ("closed", "failed") and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.05)
            assert bridge.manager.active == 0
        finally:
            await peer.close()
        metrics = bridge.metrics.render().decode()
    assert "The model service ended the session" in error["message"]
    assert ended["reason"] == "upstream_closed"
    assert 'omni_rtc_calls_failed_total{reason="upstream_closed",transport="webrtc"} 1.0' in metrics


async def test_session_time_limit_renews_the_session_and_the_call_goes_on(speech_wav) -> None:
    # The service closes a session after N s without a reply (300 s in production).
    # (300 s in production; here longer than one spoken turn, ~4 s, and no longer)
    emulator = EmulatorConfig(idle_timeout_s=6.0, reply_delay_s=0.05)
    async with run_bridge(emulator=emulator) as bridge:
        track = LoopingPcmTrack(load_pcm48(speech_wav))
        track.muted = True  # the caller is silent for a while
        peer = TestPeer(bridge.url, track)
        try:
            await peer.call()
            await peer.wait_connected()
            _, notice = await peer.wait_message(lambda m: m.get("type") == "notice", timeout=10)
            track.muted = False
            _, final = await peer.wait_message(
                lambda m: m.get("type") == "transcript" and m["role"] == "assistant" and m["final"],
                timeout=20,
            )
            assert bridge.manager.active == 1
        finally:
            await peer.close()
        metrics = bridge.metrics.render().decode()
        sessions = len(bridge.emulator.sessions)
    assert "does not remember" in notice["message"]
    assert final["text"].startswith("I heard ")
    assert sessions >= 2
    assert not peer.of_type("error")  # a renewal is not an error for the caller
    assert not peer.of_type("ended")
    rollovers = float(re.search(r"^omni_rtc_upstream_rollovers_total (\S+)$", metrics, re.M)[1])
    assert rollovers >= 1
