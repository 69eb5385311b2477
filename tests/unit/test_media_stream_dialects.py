"""Media-stream frames as the services document them -> typed events, and back."""

from __future__ import annotations

import base64
import json

import pytest

from omni_rtc.transports.media_stream_dialects import (
    DIALECTS,
    PCMA,
    PCMU,
    Connected,
    FrameError,
    Ignored,
    Key,
    Mark,
    Media,
    Skipped,
    Start,
    Stop,
)

TWILIO, TELNYX, PLIVO = DIALECTS["twilio"], DIALECTS["telnyx"], DIALECTS["plivo"]
SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
PAYLOAD = base64.b64encode(bytes([0xFF] * 160)).decode()

# Shapes from Twilio's "Media Streams - WebSocket Messages" page.
TWILIO_START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "accountSid": "AC123",
        "streamSid": SID,
        "callSid": "CA123",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"voice": "Ethan", "mode": "server_vad"},
    },
    "streamSid": SID,
}


def text(frame: dict) -> str:
    return json.dumps(frame)


def test_twilio_frames() -> None:
    assert TWILIO.parse(text({"event": "connected", "protocol": "Call", "version": "1.0.0"})) == (
        Connected()
    )
    start = TWILIO.parse(text(TWILIO_START))
    assert start == Start(SID, "CA123", PCMU, {"voice": "Ethan", "mode": "server_vad"})
    media = {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": PAYLOAD}
    frame = {"event": "media", "sequenceNumber": "3", "media": media, "streamSid": SID}
    assert TWILIO.parse(text(frame)) == Media(bytes([0xFF] * 160), SID)
    outbound = {**frame, "media": {**media, "track": "outbound"}}
    assert isinstance(TWILIO.parse(text(outbound)), Ignored)
    mark = {"event": "mark", "sequenceNumber": "4", "streamSid": SID, "mark": {"name": "m1"}}
    assert TWILIO.parse(text(mark)) == Mark("m1")
    dtmf = {"event": "dtmf", "streamSid": SID, "dtmf": {"track": "inbound_track", "digit": "1"}}
    assert TWILIO.parse(text(dtmf)) == Key("1")
    stop = {"event": "stop", "sequenceNumber": "5", "stop": {"callSid": "CA123"}, "streamSid": SID}
    assert TWILIO.parse(text(stop)) == Stop()
    assert isinstance(TWILIO.parse(text({"event": "news"})), Skipped)
    assert isinstance(TWILIO.parse(text({"event": "dtmf", "dtmf": {"digit": "12"}})), Skipped)


def test_twilio_commands() -> None:
    assert json.loads(TWILIO.media(SID, b"\xff\x7f", PCMU)) == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": "/38="},
    }
    assert json.loads(TWILIO.mark(SID, "m1")) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": "m1"},
    }
    assert json.loads(TWILIO.clear(SID)) == {"event": "clear", "streamSid": SID}


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("{", "not valid JSON"),
        ("[" * 5000 + "]" * 5000, "not valid JSON"),
        ('{"event": 1}', "no 'event'"),
        ("null", "not a JSON object"),
        ('{"event": "media", "media": {"payload": "***"}}', "not base64"),
        ('{"event": "media", "media": []}', "no 'media' object"),
        ('{"event": "mark", "mark": {"name": ""}}', "no valid 'name'"),
        ('{"event": "start", "start": {"streamSid": "MZ1"}}', "no 'mediaFormat'"),
        ("x" * 70_000, "too large"),
    ],
)
def test_malformed_frames_are_refused_with_a_reason(frame: str, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        TWILIO.parse(frame)


@pytest.mark.parametrize(
    "fmt",
    [
        {"encoding": "audio/x-alaw", "sampleRate": 8000},
        {"encoding": "audio/x-mulaw", "sampleRate": 16000},
        {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 2},
        {"encoding": "audio/x-mulaw", "sampleRate": "8k"},
    ],
)
def test_twilio_takes_only_mulaw_8k_mono(fmt: dict) -> None:
    frame = json.loads(text(TWILIO_START))
    frame["start"]["mediaFormat"] = fmt
    with pytest.raises(FrameError, match="unsupported media format"):
        TWILIO.parse(text(frame))


def test_custom_parameters_must_be_short_strings() -> None:
    for bad in ({"voice": 1}, {"voice": "x" * 5000}, ["voice"], {str(i): "" for i in range(40)}):
        frame = json.loads(text(TWILIO_START))
        frame["start"]["customParameters"] = bad
        with pytest.raises(FrameError, match="custom parameter"):
            TWILIO.parse(text(frame))


def test_telnyx_frames_and_commands() -> None:
    start = {
        "event": "start",
        "sequence_number": "1",
        "start": {
            "user_id": "u1",
            "call_control_id": "v3:abc",
            "client_state": "",
            "media_format": {"encoding": "PCMA", "sample_rate": 8000, "channels": 1},
        },
        "stream_id": "32de0dea",
    }
    assert TELNYX.parse(text(start)) == Start("32de0dea", "v3:abc", PCMA, {})
    start["start"]["media_format"] = {"encoding": "L16", "sample_rate": 16000, "channels": 1}
    parsed = TELNYX.parse(text(start))
    assert isinstance(parsed, Start)
    assert (parsed.codec.name, parsed.codec.sample_rate) == ("L16", 16000)
    assert parsed.codec.decode(b"\x01\x02") == b"\x02\x01"  # big-endian on the wire
    start["start"]["media_format"] = {"encoding": "G722", "sample_rate": 16000}
    with pytest.raises(FrameError, match="PCMU or PCMA"):
        TELNYX.parse(text(start))
    media = {"event": "media", "media": {"track": "inbound", "payload": PAYLOAD}, "stream_id": "s"}
    assert TELNYX.parse(text(media)) == Media(bytes([0xFF] * 160), "s")
    error = {"event": "error", "payload": {"code": 100002, "title": "Unknown", "detail": "bad"}}
    assert TELNYX.parse(text(error)) == Skipped("Telnyx reports an error: bad")
    assert json.loads(TELNYX.clear("s")) == {"event": "clear"}
    assert json.loads(TELNYX.mark("s", "m")) == {"event": "mark", "mark": {"name": "m"}}
    assert json.loads(TELNYX.media("s", b"\xff", PCMU)) == {
        "event": "media",
        "media": {"payload": "/w=="},
    }


def test_plivo_frames_and_commands() -> None:
    start = {
        "event": "start",
        "sequenceNumber": 1,
        "start": {
            "callId": "c1",
            "streamId": "s1",
            "accountId": "MA1",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
        },
        "extra_headers": "a=1",
    }
    assert PLIVO.parse(text(start)) == Start("s1", "c1", PCMU, {})
    start["start"]["mediaFormat"]["encoding"] = "audio/x-l16"
    with pytest.raises(FrameError, match="contentType"):
        PLIVO.parse(text(start))
    assert PLIVO.parse(text({"event": "playedStream", "streamId": "s1", "name": "m"})) == Mark("m")
    assert isinstance(PLIVO.parse(text({"event": "clearedAudio", "streamId": "s1"})), Ignored)
    assert json.loads(PLIVO.media("s1", b"\xff", PCMU)) == {
        "event": "playAudio",
        "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": "/w=="},
    }
    assert json.loads(PLIVO.mark("s1", "m")) == {
        "event": "checkpoint",
        "streamId": "s1",
        "name": "m",
    }
    assert json.loads(PLIVO.clear("s1")) == {"event": "clearAudio", "streamId": "s1"}
