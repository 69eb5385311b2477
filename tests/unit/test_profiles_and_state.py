import pytest

from omni_rtc.realtime import DASHSCOPE, OPENAI, ConversationState, get_profile
from omni_rtc.realtime import events as ev


def test_profiles_carry_rates_and_barge_in_strategy() -> None:
    assert (DASHSCOPE.input_rate, DASHSCOPE.output_rate) == (16_000, 24_000)
    assert (OPENAI.input_rate, OPENAI.output_rate) == (24_000, 24_000)
    assert not DASHSCOPE.barge_in.truncate_item
    assert OPENAI.barge_in.truncate_item
    assert OPENAI.headers("k") == {"OpenAI-Beta": "realtime=v1", "Authorization": "Bearer k"}
    assert DASHSCOPE.headers(None) == {}


def test_urls_per_region_and_model() -> None:
    assert DASHSCOPE.url("qwen-omni-turbo-realtime") == (
        "wss://dashscope.aliyuncs.com/api-ws/v1/realtime?model=qwen-omni-turbo-realtime"
    )
    assert DASHSCOPE.regions["singapore"].startswith("wss://dashscope-intl.aliyuncs.com/")
    assert DASHSCOPE.url("m", "ws://127.0.0.1:9/api-ws/v1/realtime?model=old&x=1") == (
        "ws://127.0.0.1:9/api-ws/v1/realtime?x=1&model=m"
    )


def test_models_voices_and_output_formats() -> None:
    turbo = DASHSCOPE.model("qwen-omni-turbo-realtime-2025-05-08")
    assert turbo.default_voice == "Chelsie"
    assert turbo.output_audio_format == "pcm16"
    flash = DASHSCOPE.model("qwen3-omni-flash-realtime")
    assert flash.output_audio_format == "pcm24"
    assert len(flash.voices) == 17
    assert flash.default_voice == "Cherry"
    with pytest.raises(ValueError, match=r"unknown voice 'Nobody'.*Chelsie, Serena, Ethan, Cherry"):
        turbo.check_voice("Nobody")
    with pytest.raises(ValueError, match="unknown model 'qwen-nope'"):
        DASHSCOPE.model("qwen-nope")
    with pytest.raises(ValueError, match="unknown provider"):
        get_profile("acme")


def test_session_config_for_modes() -> None:
    vad = DASHSCOPE.session_config(
        voice="Ethan", instructions="be brief", vad_threshold=0.2
    ).to_dict()
    assert vad["voice"] == "Ethan"
    assert vad["turn_detection"]["threshold"] == 0.2
    assert vad["modalities"] == ["text", "audio"]
    assert vad["input_audio_transcription"] == {"model": "gummy-realtime-v1"}
    manual = DASHSCOPE.session_config(manual=True).to_dict()
    assert manual["turn_detection"] is None
    assert manual["voice"] == "Chelsie"
    assert (
        DASHSCOPE.session_config(model="qwen3-omni-flash-realtime").output_audio_format == "pcm24"
    )
    with pytest.raises(ValueError, match="threshold"):
        OPENAI.session_config(vad_threshold=-0.5)
    with pytest.raises(ValueError, match="silence"):
        DASHSCOPE.session_config(vad_silence_ms=100)
    with pytest.raises(ValueError, match="sampling"):
        DASHSCOPE.session_config(sampling={"temperature": 0.5})


def test_state_tracks_response_and_buffer() -> None:
    state = ConversationState()
    assert not state.can_append_image
    state.received(ev.SessionUpdated(session={"voice": "Chelsie"}))
    state.sent(ev.InputAudioBufferAppend(audio=b"\0\0"))
    assert state.can_append_image
    state.received(ev.InputAudioBufferCommitted(item_id="item_1"))
    assert not state.can_append_image
    state.received(ev.ResponseCreated(response={"id": "resp_1"}))
    state.received(ev.OutputItemAdded(response_id="resp_1", item={"id": "item_2"}))
    assert state.response_active
    assert state.assistant_item_id == "item_2"
    state.received(ev.ResponseDone(response={"id": "resp_1", "status": "completed"}))
    assert not state.response_active


def test_barge_in_events_follow_the_strategy() -> None:
    state = ConversationState()
    assert state.barge_in_events(DASHSCOPE.barge_in, 100) == []
    state.received(ev.ResponseCreated(response={"id": "resp_1"}))
    state.received(ev.AudioDelta(item_id="item_9", delta=b"\0\0"))
    assert state.barge_in_events(DASHSCOPE.barge_in, 800) == [ev.ResponseCancel()]
    assert state.barge_in_events(OPENAI.barge_in, 800) == [
        ev.ResponseCancel(),
        ev.ConversationItemTruncate(item_id="item_9", content_index=0, audio_end_ms=800),
    ]
    state.sent(ev.ResponseCancel())
    assert not state.response_active  # never wait on a response.done that may not come
