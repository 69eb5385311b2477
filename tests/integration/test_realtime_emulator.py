"""The realtime client against the emulator: every documented path, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import numpy as np
import pytest
from websockets.asyncio.server import serve

from omni_rtc.emulator import Emulator, EmulatorConfig
from omni_rtc.realtime import (
    DASHSCOPE,
    AuthenticationFailed,
    HandshakeTimeout,
    ImageBeforeAudio,
    RealtimeClient,
    SessionConfig,
    SessionRejected,
    SessionTimeout,
    UpstreamClosed,
    UpstreamUnreachable,
)
from omni_rtc.realtime import events as ev
from tests.helpers import RESPONSE_ORDER, chunks, collect_until, pattern_jpeg, utterance, wait_for

MODEL = "qwen-omni-turbo-realtime"
KEY = "sk-test-0123456789abcdef"


@contextlib.asynccontextmanager
async def session(
    emu: Emulator,
    *,
    manual: bool = False,
    key: str | None = KEY,
    config: SessionConfig | None = None,
):
    client = await RealtimeClient.connect(
        url=DASHSCOPE.url(MODEL, emu.url),
        api_key=key,
        profile=DASHSCOPE,
        session=config or DASHSCOPE.session_config(manual=manual),
    )
    try:
        yield client
    finally:
        await client.close()


async def send_audio(client: RealtimeClient, pcm: bytes, chunk_ms: int = 40) -> None:
    for piece in chunks(pcm, 16_000 * chunk_ms // 1000 * 2):
        await client.append_audio(piece)


def types(events: list) -> list[str]:
    return [e.type for e in events if not isinstance(e, (ev.AudioDelta, ev.AudioTranscriptDelta))]


async def test_server_vad_turn_follows_documented_order_and_echoes_audio() -> None:
    async with (
        Emulator(EmulatorConfig(api_key=KEY, reply_delay_s=0.01)) as emu,
        session(emu) as client,
    ):
        assert client.state.session_ready
        assert client.state.session["turn_detection"]["type"] == "server_vad"
        await send_audio(client, utterance(speech_s=1.2))
        got = await collect_until(client, lambda e: isinstance(e, ev.ResponseDone))
    assert types(got) == [
        "session.created",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.created",
        *RESPONSE_ORDER,
    ]
    started = next(e for e in got if isinstance(e, ev.SpeechStarted))
    stopped = next(e for e in got if isinstance(e, ev.SpeechStopped))
    assert abs(started.audio_start_ms - 200) <= 40  # 500 ms lead minus 300 ms prefix padding
    assert abs(stopped.audio_end_ms - 1700) <= 40
    audio = b"".join(e.delta for e in got if isinstance(e, ev.AudioDelta))
    seconds = len(audio) / 2 / DASHSCOPE.output_rate
    assert 1.4 <= seconds <= 1.8  # the utterance (1.2 s) + prefix padding, echoed at 24 kHz
    pcm = np.frombuffer(audio, dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(pcm))
    peak_hz = np.argmax(spectrum) * DASHSCOPE.output_rate / len(pcm)
    assert abs(peak_hz - 300) < 5  # the echo keeps the pitch: resampled, not sped up
    transcript = "".join(e.delta for e in got if isinstance(e, ev.AudioTranscriptDelta))
    done = next(e for e in got if isinstance(e, ev.AudioTranscriptDone))
    assert transcript == done.transcript
    assert done.transcript.startswith("I heard 1.")
    response_done = got[-1]
    assert response_done.status == "completed"
    assert response_done.usage["input_tokens_details"]["audio_tokens"] > 0
    assert "output_tokens_details" in response_done.usage
    assert not client.state.response_active


async def test_reply_audio_arrives_in_bursts_faster_than_real_time() -> None:
    config = EmulatorConfig(reply="tone", tone_seconds=2.0, reply_speed=4.0, reply_delay_s=0.0)
    async with Emulator(config) as emu, session(emu) as client:
        await send_audio(client, utterance())
        loop = asyncio.get_running_loop()
        arrivals: list[float] = []

        def stop(e: object) -> bool:
            if isinstance(e, ev.AudioDelta):
                arrivals.append(loop.time())
            return isinstance(e, ev.ResponseDone)

        await collect_until(client, stop)
    assert len(arrivals) == 20  # 2 s in 100 ms deltas
    assert arrivals[-1] - arrivals[0] < 1.0  # 2 s of audio in about 0.5 s


async def test_manual_mode_commit_then_response_create() -> None:
    async with (
        Emulator(EmulatorConfig(reply_delay_s=0.01)) as emu,
        session(emu, manual=True) as client,
    ):
        assert client.state.session["turn_detection"] is None
        await send_audio(client, utterance(lead_s=0.1, tail_s=0.1))
        await client.commit()
        got = await collect_until(client, lambda e: isinstance(e, ev.InputAudioBufferCommitted))
        assert not any(isinstance(e, ev.SpeechStarted) for e in got)  # no VAD in manual mode
        await client.create_response()
        got += await collect_until(client, lambda e: isinstance(e, ev.ResponseDone))
    assert types(got) == [
        "session.created",
        "input_audio_buffer.committed",
        "conversation.item.created",
        *RESPONSE_ORDER,
    ]


async def test_manual_mode_errors() -> None:
    async with Emulator() as emu, session(emu, manual=True) as client:
        await client.commit()
        got = await collect_until(client, lambda e: isinstance(e, ev.ErrorEvent))
        assert (
            got[-1].message
            == "Error committing input audio buffer: buffer too small, or have no audio."
        )
        await client.send(ev.ResponseCancel())
        got = await collect_until(client, lambda e: isinstance(e, ev.ErrorEvent))
        assert got[-1].message == "Conversation has none active response"
        await client.create_response()
        await client.send(ev.ResponseCreate())
        got = await collect_until(client, lambda e: isinstance(e, ev.ErrorEvent))
        assert got[-1].message == "Conversation already has an active response"


async def test_commit_in_vad_mode_is_an_internal_error_and_closes_1011() -> None:
    async with Emulator() as emu, session(emu) as client:
        await send_audio(client, utterance(tail_s=0.1))
        await client.commit()
        with pytest.raises(UpstreamClosed) as info:
            await collect_until(client, lambda e: False)
    assert info.value.code == 1011


async def test_barge_in_during_reply_stops_it() -> None:
    config = EmulatorConfig(reply="tone", tone_seconds=6.0, reply_speed=1.0, reply_delay_s=0.0)
    async with Emulator(config) as emu, session(emu) as client:
        await send_audio(client, utterance())
        got = await collect_until(client, lambda e: isinstance(e, ev.AudioDelta))
        assert client.state.response_active
        await send_audio(client, utterance(lead_s=0.0, speech_s=0.5, tail_s=0.0))
        got = await collect_until(client, lambda e: isinstance(e, ev.ResponseDone))
        interrupted = next(i for i, e in enumerate(got) if isinstance(e, ev.SpeechStarted))
        assert not any(isinstance(e, ev.AudioDelta) for e in got[interrupted:])
        assert got[-1].status == "cancelled"
        assert not client.state.response_active
        assert client.state.user_speaking


async def test_cancel_response() -> None:
    config = EmulatorConfig(reply="tone", tone_seconds=6.0, reply_speed=1.0, reply_delay_s=0.0)
    async with Emulator(config) as emu, session(emu) as client:
        assert await client.cancel_response() is False  # nothing active: nothing sent
        await send_audio(client, utterance())
        await collect_until(client, lambda e: isinstance(e, ev.AudioDelta))
        assert await client.cancel_response() is True
        assert not client.state.response_active
        got = await collect_until(client, lambda e: isinstance(e, ev.ResponseDone))
        assert got[-1].status == "cancelled"
        assert got[-1].response["status_details"]["reason"] == "client_cancelled"


async def test_cancel_without_response_done_does_not_leave_a_response_active() -> None:
    config = EmulatorConfig(
        reply="tone", tone_seconds=6.0, reply_speed=1.0, reply_delay_s=0.0, done_after_cancel=False
    )
    async with Emulator(config) as emu, session(emu) as client:
        await send_audio(client, utterance())
        await collect_until(client, lambda e: isinstance(e, ev.AudioDelta))
        await client.cancel_response()
        assert not client.state.response_active
        # the next turn still works
        await send_audio(client, utterance())
        got = await collect_until(client, lambda e: isinstance(e, ev.ResponseCreated), timeout=10)
        assert client.state.response_active
        assert not any(isinstance(e, ev.ResponseDone) for e in got)


async def test_image_rules() -> None:
    jpeg = pattern_jpeg(640, 480)
    config = EmulatorConfig(reply_delay_s=0.0, max_image_bytes=len(jpeg) + 10)
    async with Emulator(config) as emu, session(emu, manual=True) as client:
        with pytest.raises(ImageBeforeAudio):
            await client.append_image(jpeg)
        # bypass the client's guard to see what the service says
        await client.send(ev.InputImageBufferAppend(image=jpeg))
        got = await collect_until(client, lambda e: isinstance(e, ev.ErrorEvent))
        assert got[-1].message == "Error append image before append audio."
        await send_audio(client, utterance(lead_s=0.0, tail_s=0.0))
        await client.append_image(jpeg)
        await client.append_image(pattern_jpeg(320, 240))
        await client.send(ev.InputImageBufferAppend(image=b"\xff\xd8 definitely not a jpeg"))
        got = await collect_until(client, lambda e: isinstance(e, ev.ErrorEvent))
        assert got[-1].message.startswith("Invalid image")
        await client.send(ev.InputImageBufferAppend(image=b"\xff\xd8" + bytes(len(jpeg) + 100)))
        got = await collect_until(client, lambda e: isinstance(e, ev.ErrorEvent))
        assert "exceeds the limit" in got[-1].message
        await client.commit()
        await client.create_response()
        got = await collect_until(client, lambda e: isinstance(e, ev.ResponseDone))
        record = emu.sessions[0]
    done = next(e for e in got if isinstance(e, ev.AudioTranscriptDone))
    assert done.transcript.endswith("and 2 images, the last 320×240.")
    assert [(i.accepted, i.width, i.height) for i in record.images] == [
        (False, 0, 0),
        (True, 640, 480),
        (True, 320, 240),
        (False, 0, 0),
        (False, 0, 0),
    ]
    # after a commit the buffer is empty again: images must wait for new audio
    assert not client.state.audio_in_buffer


async def test_bad_or_missing_key_is_rejected_with_a_clear_error() -> None:
    async with Emulator(EmulatorConfig(api_key=KEY)) as emu:
        with pytest.raises(
            AuthenticationFailed, match="rejected the API key \\(HTTP 401\\)"
        ) as info:
            async with session(emu, key="sk-wrong-key-123456"):
                pass
        assert "sk-wrong-key" not in str(info.value)
        with pytest.raises(AuthenticationFailed):
            async with session(emu, key=None):
                pass
    async with Emulator(EmulatorConfig(reject_auth=True)) as emu:
        with pytest.raises(AuthenticationFailed):
            async with session(emu):
                pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_host() -> None:
    port = _free_port()
    with pytest.raises(
        UpstreamUnreachable, match=f"cannot reach realtime service at ws://127.0.0.1:{port}"
    ):
        await RealtimeClient.connect(
            url=f"ws://127.0.0.1:{port}/api-ws/v1/realtime?model=m",
            api_key=KEY,
            profile=DASHSCOPE,
            session=SessionConfig(),
        )


async def test_handshake_timeout() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(HandshakeTimeout, match=r"within 0\.3 s"):
            await RealtimeClient.connect(
                url=f"ws://127.0.0.1:{port}/api-ws/v1/realtime?model=m",
                api_key=KEY,
                profile=DASHSCOPE,
                session=SessionConfig(),
                open_timeout=0.3,
            )
    finally:
        server.close()


async def test_session_updated_timeout() -> None:
    async def silent(ws) -> None:
        await ws.wait_closed()

    async with serve(silent, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        with pytest.raises(SessionTimeout, match=r"no session\.updated within 0\.3 s"):
            await RealtimeClient.connect(
                url=f"ws://127.0.0.1:{port}/?model=m",
                api_key=KEY,
                profile=DASHSCOPE,
                session=SessionConfig(),
                session_timeout=0.3,
            )


async def test_rejected_session_update_and_unknown_model() -> None:
    async with Emulator() as emu:
        with pytest.raises(SessionRejected, match="Voice 'Nobody' is not supported"):
            async with session(emu, config=SessionConfig(voice="Nobody")):
                pass
        with pytest.raises(SessionRejected, match=r"Model not found \(qwen-nope\)"):
            await RealtimeClient.connect(
                url=DASHSCOPE.url("qwen-nope", emu.url),
                api_key=KEY,
                profile=DASHSCOPE,
                session=SessionConfig(),
            )


async def test_dropped_connection_raises_upstream_closed() -> None:
    async with Emulator(EmulatorConfig(drop_after_s=0.3)) as emu, session(emu) as client:
        with pytest.raises(UpstreamClosed, match="no close frame") as info:
            await collect_until(client, lambda e: False)
        assert info.value.code is None
        with pytest.raises(UpstreamClosed):
            await client.append_audio(b"\0\0" * 160)


async def test_drop_mid_reply() -> None:
    config = EmulatorConfig(drop_mid_reply=True, reply="tone", tone_seconds=2.0, reply_delay_s=0.0)
    async with Emulator(config) as emu, session(emu) as client:
        await send_audio(client, utterance())
        got: list = []
        with pytest.raises(UpstreamClosed):
            await collect_until(client, lambda e: bool(got.append(e)))
    deltas = [e for e in got if isinstance(e, ev.AudioDelta)]
    assert 0 < len(deltas) < 20
    assert not any(isinstance(e, ev.ResponseDone) for e in got)


async def test_idle_timeout_and_session_cap_close_the_session() -> None:
    async with Emulator(EmulatorConfig(idle_timeout_s=0.4)) as emu, session(emu) as client:
        got: list = []
        with pytest.raises(UpstreamClosed) as info:
            await collect_until(client, lambda e: bool(got.append(e)))
        assert info.value.code == 1000
        assert (
            got[-1].message
            == "Your session was closed because no response was generated for 0.4 seconds."
        )
    async with Emulator(EmulatorConfig(max_session_s=0.5)) as emu, session(emu) as client:
        with pytest.raises(UpstreamClosed, match="maximum duration"):
            async for _ in client:
                pass


async def test_session_finish_and_each_connection_is_recorded() -> None:
    async with Emulator() as emu:
        async with session(emu) as client:
            await client.send(ev.SessionFinish())
            got = await collect_until(client, lambda e: isinstance(e, ev.SessionFinished))
            assert got[-1].type == "session.finished"
        await wait_for(lambda: emu.sessions[0].closed.is_set())
        assert list(emu.sessions[0].client_events)[:2] == ["session.update", "session.finish"]
        assert emu.sessions[0].close_code == 1000


async def test_live_mode_returns_each_chunk_at_once_at_24k() -> None:
    pcm = utterance(speech_s=0.5, lead_s=0.2, tail_s=0.2)  # 0.9 s = 45 chunks of 20 ms
    async with Emulator(EmulatorConfig(reply="live")) as emu, session(emu) as client:
        await send_audio(client, pcm, chunk_ms=20)
        got: list = []
        await collect_until(
            client,
            lambda e: bool(got.append(e)) or sum(isinstance(x, ev.AudioDelta) for x in got) >= 45,
        )
    deltas = [e for e in got if isinstance(e, ev.AudioDelta)]
    returned = sum(len(e.delta) for e in deltas)
    assert abs(returned - len(pcm) * 1.5) <= 0.02 * len(pcm) * 1.5  # same duration at 24 kHz
    assert not any(isinstance(e, ev.SpeechStarted) for e in got)  # no turn-taking


async def test_session_record_is_bounded() -> None:
    async with Emulator(EmulatorConfig(record_seconds=2.0)) as emu, session(emu) as client:
        for _ in range(15):
            await send_audio(client, bytes(32_000))  # 15 s of silence
        await wait_for(lambda: emu.sessions[0].audio_seconds_total >= 14.99)
        record = emu.sessions[0]
    assert record.audio_seconds_total == pytest.approx(15.0)
    assert len(record.audio) <= (2 + 10) * 32_000
