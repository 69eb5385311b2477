"""Media streams that break the protocol end cleanly, and the Telnyx and Plivo dialects.

Every malformed frame ends the stream with a logged reason and no traceback; the call's
conversation and its slot are released and the server goes on taking calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from omni_rtc.conversation.events import ConversationEvent, StateChanged
from tests.conftest import run_bridge
from tests.helpers import wait_for
from tests.integration.test_twilio import caller_ulaw, only_call, ws_url
from tests.media import envelope
from tests.twilio_peer import MediaStreamPeer

SID = "MZ00000000000000000000000000000001"


def media(payload: object, sid: str = SID) -> str:
    return json.dumps({"event": "media", "streamSid": sid, "media": {"payload": payload}})


def start(**changes: object) -> str:
    message = MediaStreamPeer("ws://unused").start_message()
    message["start"].update(changes)
    if "streamSid" in changes:
        message.pop("streamSid")
    return json.dumps(message)


AFTER_START = [
    ("not JSON", "{oops", "not valid JSON"),
    ("an array", "[1, 2]", "not a JSON object"),
    ("no event", '{"media": {}}', "no 'event'"),
    ("nested 20000 deep", "[" * 20_000 + "]" * 20_000, "not valid JSON"),
    ("bad base64", media("@@@@"), "not base64"),
    ("payload not a string", media(5), "no 'payload' string"),
    ("media without media", '{"event": "media"}', "no 'media' object"),
    ("another stream", media("/w==", sid="MZ-other"), "another stream"),
    ("oversized", json.dumps({"event": "x", "pad": "x" * 70_000}), "bad WebSocket frame"),
    ("binary", b"\x00\x01\x02", "binary frame"),
    ("a second start", start(), "second 'start'"),
    ("mark without a name", '{"event": "mark", "mark": {}}', "no valid 'name'"),
]
BEFORE_START = [
    ("media before start", media("/w=="), "'media' frame before 'start'"),
    ("start without streamSid", start(streamSid=None), "no valid 'streamSid'"),
    (
        "A-law 16 kHz",
        start(mediaFormat={"encoding": "audio/x-alaw", "sampleRate": 16000, "channels": 1}),
        "unsupported media format",
    ),
    ("unknown voice", start(customParameters={"voice": "Nobody"}), "bad custom parameters"),
    ("parameter not a string", start(customParameters={"voice": 5}), "must be a short string"),
    ("bad mode", start(customParameters={"mode": "loud"}), "bad custom parameters"),
]


async def send_frames(
    peer: MediaStreamPeer, bridge, frames: list[str | bytes], *, started: bool
) -> None:  # type: ignore[no-untyped-def]
    await peer.open()
    if started:
        await peer.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await peer.send(peer.start_message())
        await wait_for(lambda: bridge.manager.active == 1, timeout=10)
    for frame in frames:
        if isinstance(frame, bytes):
            assert peer._ws is not None
            await peer._ws.send_bytes(frame)
        else:
            await peer.send_text(frame)
    await asyncio.wait_for(peer.done.wait(), 10)


@pytest.mark.parametrize(
    ("frame", "reason", "started"),
    [pytest.param(f, r, True, id=i) for i, f, r in AFTER_START]
    + [pytest.param(f, r, False, id=i) for i, f, r in BEFORE_START],
)
async def test_a_malformed_frame_ends_the_stream_with_a_logged_reason(
    frame: str | bytes, reason: str, started: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "omni_rtc")
    async with run_bridge() as bridge:
        peer = MediaStreamPeer(ws_url(bridge))
        try:
            await send_frames(peer, bridge, [frame], started=started)
            await wait_for(lambda: bridge.manager.active == 0)
            # the server goes on: a good call right after
            good = MediaStreamPeer(ws_url(bridge))
            await good.connect()
            await wait_for(lambda: bridge.manager.active == 1, timeout=10)
            await good.close()
        finally:
            await peer.close()
        sessions = list(bridge.emulator.sessions)
        metrics = bridge.metrics.render().decode()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(reason in r.getMessage() for r in warnings), [r.getMessage() for r in warnings]
    assert "Traceback" not in caplog.text
    assert not any(r.exc_info for r in caplog.records)
    assert peer.close_code in (1008, 1009), peer.close_code
    if started:  # the model session of the broken stream was closed
        await asyncio.wait_for(sessions[0].closed.wait(), 5)
        assert 'reason="protocol_error",transport="twilio"} 1.0' in metrics
    else:
        assert len(sessions) == 1  # only the good call opened a model session


async def test_a_silent_far_end_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    async with run_bridge(["--peer-timeout", "1"]) as bridge:
        peer = MediaStreamPeer(ws_url(bridge))
        await peer.open()
        try:
            await peer.send(peer.start_message())
            await wait_for(lambda: bridge.manager.active == 1, timeout=10)
            await asyncio.wait_for(peer.done.wait(), 5)  # nothing more is sent
            await wait_for(lambda: bridge.manager.active == 0)
        finally:
            await peer.close()
        metrics = bridge.metrics.render().decode()
    assert "nothing from the far end for 1 s" in caplog.text
    assert 'reason="peer_failed",transport="twilio"} 1.0' in metrics


@pytest.mark.parametrize("dialect", ["telnyx", "plivo"])
async def test_dialects_carry_a_call_with_marks_and_clear(dialect: str, speech_wav: Path) -> None:
    async with run_bridge() as bridge:
        peer = MediaStreamPeer(
            ws_url(bridge, dialect), caller_ulaw(speech_wav), dialect=dialect, loop=False
        )
        try:
            await peer.connect()
            await wait_for(lambda: bridge.manager.active == 1, timeout=10)
            call = only_call(bridge)
            states: list[str] = []

            def on_event(event: ConversationEvent) -> None:
                if isinstance(event, StateChanged):
                    states.append(event.value)

            call.conversation.add_listener(on_event)
            await wait_for(lambda: "speaking" in states and states[-1] == "listening", timeout=30)
            # barge in from the bridge's side: the dialect's clear command goes out
            call.conversation.sink.push(bytes(16000))
            await call.conversation.barge_in()
            await wait_for(lambda: bool(peer.clears), timeout=5)
        finally:
            await peer.close()
        metrics = bridge.metrics.render().decode()
    assert call.transport == dialect
    heard = envelope(peer.heard_pcm(), 8000)
    assert np.sum(heard > 40) * 0.02 > 0.5, "the reply was not heard"
    assert peer.marks_echoed, "no mark came back"
    sent = {r.message["event"] for r in peer.received}
    expected = {
        "telnyx": {"media", "mark", "clear"},
        "plivo": {"playAudio", "checkpoint", "clearAudio"},
    }
    assert sent == expected[dialect]
    if dialect == "telnyx":
        assert all("streamSid" not in r.message for r in peer.received)
    assert f'omni_rtc_calls_total{{transport="{dialect}"}} 1.0' in metrics
