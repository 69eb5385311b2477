import pytest

from omni_rtc.emulator.session_rules import (
    SessionUpdateError,
    apply_session_update,
    default_session,
)
from omni_rtc.realtime import DASHSCOPE

TURBO = DASHSCOPE.model("qwen-omni-turbo-realtime")
FLASH = DASHSCOPE.model("qwen3-omni-flash-realtime")


def update(changes: dict, model=TURBO, audio_produced=False) -> dict:
    return apply_session_update(
        default_session("sess_1", model), changes, model, audio_produced=audio_produced
    )


def test_valid_update_is_merged_and_vad_echoes_flags() -> None:
    new = update(
        {
            "voice": "Ethan",
            "turn_detection": {"type": "server_vad", "threshold": 0.1, "silence_duration_ms": 500},
        }
    )
    assert new["voice"] == "Ethan"
    assert new["turn_detection"]["create_response"] is True
    assert new["turn_detection"]["interrupt_response"] is True
    assert new["turn_detection"]["prefix_padding_ms"] == 300
    assert update({"turn_detection": None})["turn_detection"] is None


@pytest.mark.parametrize(
    ("changes", "param", "message"),
    [
        ({"modalities": ["audio"]}, "session.modalities", "Invalid modalities"),
        ({"voice": "Tina"}, "session.voice", "not supported"),
        ({"input_audio_format": "g711_ulaw"}, "session.input_audio_format", "pcm16"),
        ({"output_audio_format": "pcm24"}, "session.output_audio_format", "use pcm16"),
        (
            {"turn_detection": {"type": "server_vad", "threshold": 1.5}},
            "session.turn_detection.threshold",
            "within",
        ),
        (
            {"turn_detection": {"type": "server_vad", "silence_duration_ms": 100}},
            "session.turn_detection.silence_duration_ms",
            "200, 6000",
        ),
        ({"turn_detection": {"type": "semantic_vad"}}, "session.turn_detection.type", "server_vad"),
        (
            {"audio": {"input": {"format": {"type": "pcm", "sample_rate": 8000}}}},
            "session.audio.input.format.sample_rate",
            "16000",
        ),
    ],
)
def test_invalid_updates_name_the_param(changes: dict, param: str, message: str) -> None:
    with pytest.raises(SessionUpdateError, match=message) as info:
        update(changes)
    assert info.value.param == param


def test_flash_wants_pcm24_and_accepts_temperature() -> None:
    new = update({"output_audio_format": "pcm24", "temperature": 0.7}, model=FLASH)
    assert new["output_audio_format"] == "pcm24"
    assert new["temperature"] == 0.7
    with pytest.raises(SessionUpdateError, match="temperature"):
        update({"temperature": 2.0}, model=FLASH)


def test_voice_is_fixed_once_audio_was_produced() -> None:
    with pytest.raises(SessionUpdateError, match="after audio"):
        update({"voice": "Ethan"}, audio_produced=True)
    assert update({"voice": "Chelsie"}, audio_produced=True)["voice"] == "Chelsie"


def test_sdk_style_nulls_are_accepted() -> None:
    new = update(
        {
            "modalities": ["text", "audio"],
            "voice": None,
            "input_audio_transcription": {"model": None},
            "sample_rate": 16000,
        }
    )
    assert new["voice"] == "Chelsie"
