"""The official DashScope SDK client talks to the emulator: proof the emulator is faithful."""

from __future__ import annotations

import asyncio
import base64
import threading

from dashscope.audio.qwen_omni import (
    AudioFormat,
    MultiModality,
    OmniRealtimeCallback,
    OmniRealtimeConversation,
)

from omni_rtc.emulator import Emulator, EmulatorConfig
from tests.helpers import RESPONSE_ORDER, chunks, pattern_jpeg, utterance

KEY = "sk-sdk-test-key-42"


class Recorder(OmniRealtimeCallback):
    def __init__(self) -> None:
        self.events: list[dict] = []
        self.done = threading.Event()
        self.closed: tuple[object, object] | None = None

    def on_event(self, message) -> None:  # the SDK passes the parsed JSON object
        self.events.append(message)
        if message.get("type") == "response.done":
            self.done.set()

    def on_close(self, close_status_code, close_msg) -> None:
        self.closed = (close_status_code, close_msg)

    def types(self) -> list[str]:
        return [
            e["type"]
            for e in self.events
            if e["type"] not in ("response.audio.delta", "response.audio_transcript.delta")
        ]


def run_vad_conversation(url: str) -> Recorder:
    recorder = Recorder()
    conversation = OmniRealtimeConversation(
        model="qwen-omni-turbo-realtime", callback=recorder, url=url, api_key=KEY
    )
    conversation.connect()
    conversation.update_session(
        output_modalities=[MultiModality.AUDIO, MultiModality.TEXT],
        voice="Chelsie",
        input_audio_format=AudioFormat.PCM_16000HZ_MONO_16BIT,
        output_audio_format=AudioFormat.PCM_24000HZ_MONO_16BIT,
        enable_input_audio_transcription=True,
        input_audio_transcription_model="gummy-realtime-v1",
        enable_turn_detection=True,
        turn_detection_type="server_vad",
    )
    pcm = utterance(speech_s=1.0)
    first = True
    for piece in chunks(pcm, 3200):  # the vendor sample's 100 ms chunks
        conversation.append_audio(base64.b64encode(piece).decode())
        if first:
            conversation.append_video(base64.b64encode(pattern_jpeg(640, 480)).decode())
            first = False
    assert recorder.done.wait(10), "no response.done"
    conversation.end_session(timeout=5)
    conversation.close()
    return recorder


async def test_sdk_vad_conversation_sees_documented_order_with_audio() -> None:
    async with Emulator(EmulatorConfig(api_key=KEY, reply_delay_s=0.01)) as emu:
        recorder = await asyncio.to_thread(run_vad_conversation, emu.url)
    assert recorder.types()[:6] == [
        "session.created",
        "session.updated",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.created",
    ]
    assert recorder.types()[6:] == [*RESPONSE_ORDER, "session.finished"]
    audio = b"".join(
        base64.b64decode(e["delta"]) for e in recorder.events if e["type"] == "response.audio.delta"
    )
    assert len(audio) / 2 / 24_000 > 1.0
    done = recorder.events[-2]
    assert done["type"] == "response.done"
    assert done["response"]["status"] == "completed"
    assert set(done["response"]["usage"]) >= {"input_tokens_details", "output_tokens_details"}
    transcript = next(e for e in recorder.events if e["type"] == "response.audio_transcript.done")
    assert "and 1 image, the last 640×480" in transcript["transcript"]
    for event in recorder.events:
        assert event["event_id"].startswith("event_")
        assert len(event["event_id"]) == 27


def run_manual_conversation(url: str) -> Recorder:
    recorder = Recorder()
    conversation = OmniRealtimeConversation(
        model="qwen-omni-turbo-realtime", callback=recorder, url=url, api_key=KEY
    )
    conversation.connect()
    conversation.update_session(
        output_modalities=[MultiModality.AUDIO, MultiModality.TEXT],
        voice="Ethan",
        enable_turn_detection=False,
    )
    for piece in chunks(utterance(lead_s=0.0, tail_s=0.0), 3200):
        conversation.append_audio(base64.b64encode(piece).decode())
    conversation.commit()
    conversation.create_response()
    assert recorder.done.wait(10), "no response.done"
    conversation.close()
    return recorder


async def test_sdk_push_to_talk_conversation() -> None:
    async with Emulator(EmulatorConfig(api_key=KEY, reply_delay_s=0.01)) as emu:
        recorder = await asyncio.to_thread(run_manual_conversation, emu.url)
    assert recorder.types() == [
        "session.created",
        "session.updated",
        "input_audio_buffer.committed",
        "conversation.item.created",
        *RESPONSE_ORDER,
    ]
    updated = recorder.events[1]["session"]
    assert updated["voice"] == "Ethan"
    assert updated["turn_detection"] is None
