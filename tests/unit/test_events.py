import base64
import json

import pytest

from omni_rtc.realtime import codec
from omni_rtc.realtime import events as ev


def test_client_event_encodes_base64_audio_and_omits_none() -> None:
    text = codec.encode_event(ev.InputAudioBufferAppend(audio=b"\x01\x02\x03"))
    data = json.loads(text)
    assert data == {
        "type": "input_audio_buffer.append",
        "audio": base64.b64encode(b"\x01\x02\x03").decode(),
    }


def test_every_documented_server_event_round_trips() -> None:
    samples = [
        {
            "type": "session.created",
            "event_id": "event_1",
            "session": {"id": "sess_1", "voice": "Chelsie"},
        },
        {"type": "session.updated", "session": {"voice": "Ethan"}},
        {
            "type": "error",
            "event_id": "event_2",
            "error": {
                "type": "invalid_request_error",
                "code": "invalid_value",
                "message": "bad",
                "param": "session.modalities",
            },
        },
        {"type": "input_audio_buffer.speech_started", "audio_start_ms": 3647, "item_id": "item_1"},
        {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 4453, "item_id": "item_1"},
        {"type": "input_audio_buffer.committed", "item_id": "item_1"},
        {"type": "input_audio_buffer.cleared"},
        {
            "type": "conversation.item.created",
            "item": {"id": "item_1", "role": "user", "content": [{"type": "input_audio"}]},
        },
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "item_1",
            "content_index": 0,
            "transcript": "hi",
        },
        {
            "type": "conversation.item.input_audio_transcription.failed",
            "item_id": "item_1",
            "content_index": 0,
            "error": {"code": "x", "message": "y"},
        },
        {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
        {
            "type": "response.output_item.added",
            "response_id": "resp_1",
            "output_index": 0,
            "item": {"id": "item_2"},
        },
        {
            "type": "response.content_part.added",
            "response_id": "resp_1",
            "item_id": "item_2",
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "audio", "text": ""},
        },
        {
            "type": "response.audio_transcript.delta",
            "response_id": "resp_1",
            "item_id": "item_2",
            "output_index": 0,
            "content_index": 0,
            "delta": "Hel",
        },
        {
            "type": "response.audio.delta",
            "response_id": "resp_1",
            "item_id": "item_2",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(b"\x00\x01" * 10).decode(),
        },
        {
            "type": "response.audio_transcript.done",
            "response_id": "resp_1",
            "item_id": "item_2",
            "output_index": 0,
            "content_index": 0,
            "transcript": "Hello",
        },
        {
            "type": "response.audio.done",
            "response_id": "resp_1",
            "item_id": "item_2",
            "output_index": 0,
            "content_index": 0,
        },
        {
            "type": "response.text.delta",
            "response_id": "resp_1",
            "item_id": "item_2",
            "output_index": 0,
            "content_index": 0,
            "delta": "x",
        },
        {
            "type": "response.text.done",
            "response_id": "resp_1",
            "item_id": "item_2",
            "output_index": 0,
            "content_index": 0,
            "text": "x",
        },
        {
            "type": "response.content_part.done",
            "response_id": "resp_1",
            "item_id": "item_2",
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "audio", "text": "Hello"},
        },
        {
            "type": "response.output_item.done",
            "response_id": "resp_1",
            "output_index": 0,
            "item": {"id": "item_2", "status": "completed"},
        },
        {
            "type": "response.done",
            "response": {
                "id": "resp_1",
                "status": "completed",
                "usage": {"input_tokens_details": {"audio_tokens": 1}},
            },
        },
        {"type": "session.finished"},
    ]
    for sample in samples:
        event = codec.decode_server_event(json.dumps(sample))
        assert not isinstance(event, ev.UnknownEvent), sample["type"]
        assert event.type == sample["type"]
        assert codec.event_to_dict(event) == sample


def test_typed_fields_are_parsed() -> None:
    delta = codec.decode_server_event(
        json.dumps(
            {
                "type": "response.audio.delta",
                "delta": base64.b64encode(b"abcd").decode(),
                "item_id": "i",
            }
        )
    )
    assert isinstance(delta, ev.AudioDelta)
    assert delta.delta == b"abcd"
    done = codec.decode_server_event(
        json.dumps(
            {
                "type": "response.done",
                "response": {"id": "r", "status": "completed", "usage": {"total_tokens": 3}},
            }
        )
    )
    assert isinstance(done, ev.ResponseDone)
    assert (done.response_id, done.status, done.usage["total_tokens"]) == ("r", "completed", 3)
    err = codec.decode_server_event(
        json.dumps(
            {
                "type": "error",
                "error": {"message": "Conversation has none active response", "code": ""},
            }
        )
    )
    assert isinstance(err, ev.ErrorEvent)
    assert err.message == "Conversation has none active response"
    assert err.code == ""


def test_unknown_event_type_is_kept_not_dropped() -> None:
    raw = {
        "type": "rate_limits.updated",
        "rate_limits": [{"name": "requests"}],
        "event_id": "event_9",
    }
    event = codec.decode_server_event(json.dumps(raw))
    assert isinstance(event, ev.UnknownEvent)
    assert event.type == "rate_limits.updated"
    assert event.event_id == "event_9"
    assert codec.event_to_dict(event) == raw


def test_unknown_keys_are_kept_in_extra() -> None:
    raw = {
        "type": "input_audio_buffer.committed",
        "item_id": "item_1",
        "previous_item_id": None,
        "new_field": 7,
    }
    event = codec.decode_server_event(json.dumps(raw))
    assert event.extra == {"new_field": 7}
    assert codec.event_to_dict(event)["new_field"] == 7


def test_null_scalar_falls_back_to_default() -> None:
    event = codec.decode_server_event(
        json.dumps(
            {"type": "input_audio_buffer.speech_started", "item_id": None, "audio_start_ms": 5}
        )
    )
    assert isinstance(event, ev.SpeechStarted)
    assert event.item_id == ""


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"no_type": 1}', "no 'type'"),
        ('{"type": "input_audio_buffer.append", "audio": "%%%"}', "not valid base64"),
        ('{"type": "input_audio_buffer.append", "audio": 5}', "base64 string"),
        (
            '{"type": "conversation.item.truncate", "item_id": "i", "audio_end_ms": "12"}',
            "wrong type",
        ),
    ],
)
def test_malformed_client_frames_raise_protocol_error(frame: str, message: str) -> None:
    with pytest.raises(ev.ProtocolError, match=message):
        codec.decode_client_event(frame)


def test_binary_frames_are_rejected() -> None:
    with pytest.raises(ev.ProtocolError, match="binary"):
        codec.decode_server_event(b"\x00")


def test_client_events_round_trip() -> None:
    events = [
        ev.SessionUpdate(session={"voice": "Chelsie", "turn_detection": None}),
        ev.InputAudioBufferAppend(audio=b"\x00\x00"),
        ev.InputAudioBufferCommit(),
        ev.InputAudioBufferClear(),
        ev.InputImageBufferAppend(image=b"\xff\xd8\xff"),
        ev.ResponseCreate(response={"instructions": "be brief"}),
        ev.ResponseCreate(),
        ev.ResponseCancel(event_id="event_x"),
        ev.ConversationItemTruncate(item_id="item_1", content_index=0, audio_end_ms=1500),
        ev.SessionFinish(),
    ]
    for event in events:
        again = codec.decode_client_event(codec.encode_event(event))
        assert again == event
    assert json.loads(codec.encode_event(ev.SessionUpdate(session={"turn_detection": None})))[
        "session"
    ] == {"turn_detection": None}
