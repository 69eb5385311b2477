"""Phone calls through /twilio/stream with a far end that behaves as Twilio documents.

Speech in, the reply heard, barge-in, marks, DTMF, capacity, and the dialects. What the
caller hears is measured on the peer's media clock (20 ms ticks), never in CPU time.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from omni_rtc.conversation.events import ConversationEvent, Dtmf, Ended, StateChanged
from omni_rtc.emulator import EmulatorConfig
from omni_rtc.emulator.replies import resample_pcm16
from tests.conftest import Bridge, run_bridge
from tests.helpers import wait_for
from tests.media import envelope, load_pcm48
from tests.twilio_peer import MediaStreamPeer, mulaw_encode


def ws_url(bridge: Bridge, dialect: str = "twilio") -> str:
    return bridge.url.replace("http://", "ws://") + f"/{dialect}/stream"


def caller_ulaw(speech_wav: Path) -> bytes:
    return mulaw_encode(resample_pcm16(load_pcm48(speech_wav), 48_000, 8_000))


def sliding_correlation(reference: np.ndarray, received: np.ndarray) -> float:
    """Best Pearson r of ``reference`` against any window of ``received``."""
    n = len(reference)
    best = -1.0
    for start in range(len(received) - n + 1):
        window = received[start : start + n]
        if np.std(window) > 0:
            best = max(best, float(np.corrcoef(reference, window)[0, 1]))
    return best


def sine_residual(x: np.ndarray, hz: float, rate: int) -> float:
    """Largest deviation of ``x`` from its best-fitting sine of ``hz``, over the amplitude."""
    n = np.arange(len(x))
    basis = np.stack([np.sin(2 * np.pi * hz * n / rate), np.cos(2 * np.pi * hz * n / rate)], 1)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    return float(np.max(np.abs(x - basis @ coef)) / np.hypot(*coef))


def voiced(levels: np.ndarray) -> np.ndarray:
    """The envelope from the first to the last frame within 30 dB of the loudest."""
    loud = np.flatnonzero(levels > levels.max() - 30)
    return levels[loud[0] : loud[-1] + 1]


class StampedEvents(deque):  # type: ignore[type-arg]
    """An emulator record's event list that notes the peer's media clock at each event."""

    def __init__(self, peer: MediaStreamPeer) -> None:
        super().__init__(maxlen=5000)
        self.peer = peer
        self.stamps: list[tuple[int, str]] = []

    def append(self, item: dict) -> None:  # type: ignore[override]
        self.stamps.append((self.peer.frame, str(item.get("type"))))
        super().append(item)


def only_call(bridge: Bridge):  # type: ignore[no-untyped-def]
    calls = bridge.manager.list()
    assert len(calls) == 1, calls
    return calls[0]


async def test_speech_reaches_the_model_and_the_reply_is_heard(speech_wav) -> None:
    speech = load_pcm48(speech_wav)
    async with run_bridge() as bridge:
        peer = MediaStreamPeer(ws_url(bridge), caller_ulaw(speech_wav), loop=False)
        try:
            await peer.connect()
            await wait_for(lambda: bridge.manager.active == 1, timeout=10)
            call = only_call(bridge)
            states: list[tuple[int, str]] = []

            def on_event(event: ConversationEvent) -> None:
                if isinstance(event, StateChanged):
                    states.append((peer.frame, event.value))

            call.conversation.add_listener(on_event)
            # one whole reply heard: speaking, then listening again
            await wait_for(
                lambda: ("speaking" in [s for _, s in states]) and states[-1][1] == "listening",
                timeout=30,
            )
            end_mark_frame = max(f for f, n in peer.marks_echoed)
            last_media_frame = peer.of("media")[-1].frame
            listening_at = states[-1][0]
        finally:
            await peer.close()
        record = bridge.emulator.sessions[0]
        metrics = bridge.metrics.render().decode()

    # the model got the caller's speech as 16 kHz pcm16, recognisably the same signal
    reference = voiced(envelope(resample_pcm16(speech, 48_000, 16_000), 16_000))
    received = envelope(bytes(record.audio), 16_000)
    r = sliding_correlation(reference, received)
    print(f"speech envelope correlation through μ-law 8 kHz: r = {r:.3f}")
    assert r >= 0.8, f"envelope correlation {r:.2f}"
    assert sliding_correlation(reference[::-1], received) < r - 0.2
    # the caller heard the echo: energy, and the envelope of what was said
    heard = peer.heard_pcm()
    levels = envelope(heard, 8000)
    assert np.sum(levels > 40) * 0.02 > 0.5, "the reply was not heard"
    reference_voice = voiced(envelope(resample_pcm16(speech, 48_000, 8_000), 8000))
    r_heard = sliding_correlation(reference_voice, levels)
    print(f"heard reply vs the caller's words (echo): r = {r_heard:.3f}")
    assert r_heard >= 0.8
    # the reply left the bridge faster than real time; the state came back to listening
    # only once the far end had played it (its last mark echoed), not when it was sent
    assert end_mark_frame - last_media_frame >= 10, (last_media_frame, end_mark_frame)
    assert listening_at >= end_mark_frame, (listening_at, end_mark_frame)
    assert peer.of("media")[0].message["streamSid"] == peer.stream_sid
    assert 'omni_rtc_calls_total{transport="twilio"} 1.0' in metrics


async def test_barge_in_sends_clear_within_one_frame_of_speech_started(speech_wav) -> None:
    # An 8 s tone sent 4x faster than real time sits in the far end's buffer when the
    # caller's next utterance (the loop) starts over it.
    emulator = EmulatorConfig(reply="tone", tone_seconds=8.0, reply_speed=4.0, reply_delay_s=0.05)
    async with run_bridge(emulator=emulator) as bridge:
        peer = MediaStreamPeer(ws_url(bridge), caller_ulaw(speech_wav))
        try:
            await peer.connect()
            await wait_for(lambda: len(bridge.emulator.sessions) == 1, timeout=10)
            record = bridge.emulator.sessions[0]
            stamped = StampedEvents(peer)
            record.server_events = stamped
            await wait_for(lambda: bridge.manager.active == 1, timeout=10)
            conversation = only_call(bridge).conversation
            played: list[int | None] = []
            client = conversation.client
            barge_in = client.barge_in

            async def spy(played_ms: int | None):  # type: ignore[no-untyped-def]
                played.append(played_ms)
                return await barge_in(played_ms)

            client.barge_in = spy
            await wait_for(lambda: bool(peer.clears), timeout=30)
            await asyncio.sleep(0.3)
            buffered_after_clear = peer.buffered_frames()
        finally:
            await peer.close()
        metrics = bridge.metrics.render().decode()

    clear_frame = peer.clears[0]
    started = [f for f, kind in stamped.stamps if kind == "input_audio_buffer.speech_started"]
    speech_frame = max(f for f in started if f <= clear_frame)
    print(f"clear reached the far end {clear_frame - speech_frame} frames after speech_started")
    assert 0 <= clear_frame - speech_frame <= 1
    # the tone was playing when the caller talked over it, and nothing of it after
    heard = envelope(peer.heard_pcm(), 8000)
    tone_frames = np.flatnonzero(heard[:clear_frame] > 40)
    assert clear_frame - tone_frames[0] > 10, "the tone was not playing before the barge-in"
    after = heard[clear_frame + 1 : clear_frame + 10]
    assert np.all(after < 10), heard[clear_frame - 2 : clear_frame + 10]
    assert buffered_after_clear == 0
    # the 24 kHz tone cut into 8 kHz frames has no seams: one stateful resampler, so the
    # heard samples stay within μ-law's quantisation of a clean sine, frame after frame
    samples = np.frombuffer(peer.heard_pcm(), dtype="<i2").astype(np.float64)
    segment = samples[(tone_frames[0] + 2) * 160 : (clear_frame - 1) * 160]
    residual = sine_residual(segment, 440.0, 8000)
    print(f"tone through the bridge: worst deviation from a sine {residual:.3f} of its amplitude")
    assert residual < 0.045  # a resampler per chunk (the known crackle) measures 0.066
    # what the bridge told the model the caller had heard matches what was played
    heard_ms = (clear_frame - tone_frames[0]) * 20
    print(f"played before barge-in: far end {heard_ms} ms, bridge's estimate {played[0]} ms")
    assert played
    assert played[0] is not None
    assert abs(played[0] - heard_ms) <= 100
    assert re.search(r"^omni_rtc_barge_ins_total 1\.0$", metrics, re.M)


async def test_dtmf_unknown_events_and_stop(caplog) -> None:
    async with run_bridge() as bridge:
        peer = MediaStreamPeer(ws_url(bridge))
        try:
            await peer.connect()
            await wait_for(lambda: bridge.manager.active == 1, timeout=10)
            events = only_call(bridge).conversation.events()
            await peer.send({"event": "hello", "streamSid": peer.stream_sid})
            for digit in "5#":
                await peer.send_dtmf(digit)
            await peer.stop()
            await asyncio.wait_for(peer.done.wait(), 5)
            seen = [e async for e in events]
        finally:
            await peer.close()
        await wait_for(lambda: bridge.manager.active == 0)
        metrics = bridge.metrics.render().decode()
    digits = [e.digit for e in seen if isinstance(e, Dtmf)]
    assert digits == ["5", "#"]
    assert isinstance(seen[-1], Ended)
    assert seen[-1].reason == "hangup"
    assert peer.close_code == 1000
    assert 'omni_rtc_dtmf_digits_total{transport="twilio"} 2.0' in metrics
    assert "unknown event 'hello'" in caplog.text
    assert "Traceback" not in caplog.text


async def test_capacity_refuses_the_stream_cleanly() -> None:
    async with run_bridge(["--max-calls", "1"]) as bridge:
        first = MediaStreamPeer(ws_url(bridge))
        try:
            await first.connect()
            await wait_for(lambda: bridge.manager.active == 1, timeout=10)
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(ws_url(bridge))
            assert bridge.manager.active == 1
        finally:
            await first.close()
        metrics = bridge.metrics.render().decode()
    assert refused.value.status == 503
    assert 'omni_rtc_calls_failed_total{reason="capacity",transport="twilio"} 1.0' in metrics


async def test_upstream_gone_for_good_closes_the_socket_with_a_reason(caplog) -> None:
    caplog.set_level(logging.INFO, "omni_rtc")
    emulator = EmulatorConfig(drop_after_s=1.0, reply_delay_s=0.05)
    async with run_bridge(["--reconnect-seconds", "2"], emulator=emulator) as bridge:
        peer = MediaStreamPeer(ws_url(bridge))
        try:
            await peer.connect()
            await wait_for(lambda: bridge.manager.active == 1, timeout=10)
            await bridge.emulator.stop()
            await asyncio.wait_for(peer.done.wait(), 15)
        finally:
            await peer.close()
        await wait_for(lambda: bridge.manager.active == 0)
    assert peer.close_code == 1011
    assert "closing the media stream (upstream_closed)" in caplog.text
