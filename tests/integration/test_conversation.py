"""The transport-agnostic conversation through the public API (Bridge.open_pipe), against
the emulator over real sockets: every pipe rate, barge-in, push-to-talk, DTMF, renewal."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import numpy as np
import pytest

from omni_rtc import (
    AudioPipe,
    Bridge,
    CallError,
    CallStarted,
    ConversationEvent,
    Dtmf,
    Ended,
    Interrupted,
    Notice,
    StateChanged,
    Transcript,
)
from omni_rtc.emulator import Emulator, EmulatorConfig
from tests.helpers import silence_pcm, sine_pcm, utterance, wait_for
from tests.media import envelope


@contextlib.asynccontextmanager
async def bridge_on(emulator: EmulatorConfig | None = None, **options) -> AsyncIterator[Bridge]:
    async with (
        Emulator(emulator or EmulatorConfig(reply_delay_s=0.05)) as emu,
        Bridge(upstream_url=emu.url, **options) as bridge,
    ):
        bridge.emulator = emu  # type: ignore[attr-defined]
        yield bridge


class Collector:
    """Reads a pipe's events and reply audio in the background."""

    def __init__(self, pipe: AudioPipe) -> None:
        self.events: list[ConversationEvent] = []
        self.audio = bytearray()
        self.audio_at_interrupt: int | None = None
        self._tasks = [
            asyncio.create_task(self._events(pipe)),
            asyncio.create_task(self._audio(pipe)),
        ]

    async def _events(self, pipe: AudioPipe) -> None:
        async for event in pipe.events():
            self.events.append(event)
            if isinstance(event, Interrupted) and self.audio_at_interrupt is None:
                self.audio_at_interrupt = len(self.audio)

    async def _audio(self, pipe: AudioPipe) -> None:
        async for chunk in pipe.reply_audio():
            self.audio.extend(chunk)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    def states(self) -> list[str]:
        return [e.value for e in self.of(StateChanged)]

    async def finished(self) -> None:
        await asyncio.wait_for(asyncio.gather(*self._tasks), 5)


async def speak(pipe: AudioPipe, pcm: bytes, realtime: bool = False) -> None:
    step = pipe.input_rate // 50 * 2
    for offset in range(0, len(pcm), step):
        pipe.push(pcm[offset : offset + step])
        await asyncio.sleep(0.02 if realtime else 0)


@pytest.mark.parametrize(
    ("input_rate", "output_rate"), [(8000, 8000), (16000, 24000), (48000, 16000), (24000, 48000)]
)
async def test_pipe_rates_speech_up_reply_down(input_rate: int, output_rate: int) -> None:
    async with bridge_on() as bridge:
        pipe = await bridge.open_pipe(input_rate=input_rate, output_rate=output_rate)
        got = Collector(pipe)
        said = utterance(input_rate)
        await speak(pipe, said)
        await wait_for(lambda: len(got.states()) >= 4 and got.states()[-1] == "listening", 15)
        await pipe.close()
        await got.finished()
        record = bridge.emulator.sessions[0]  # type: ignore[attr-defined]

    # upstream: 16 kHz pcm16, the same length and shape as what was said
    assert abs(len(record.audio) / 2 / 16_000 - len(said) / 2 / input_rate) < 0.05
    sent_env = envelope(said, input_rate)
    up_env = envelope(bytes(record.audio), 16_000)
    n = min(len(sent_env), len(up_env))
    assert np.corrcoef(sent_env[:n], up_env[:n])[0, 1] > 0.95
    # downstream: the echo, at the pipe's output rate, with the tone's frequency kept
    reply = np.frombuffer(bytes(got.audio), "<i2").astype(np.float64)
    assert 1.0 < len(reply) / output_rate < 2.0, len(reply) / output_rate
    spectrum = np.abs(np.fft.rfft(reply))
    peak_hz = np.argmax(spectrum) * output_rate / len(reply)
    assert abs(peak_hz - 300) < 5, peak_hz
    # the story, in order
    assert isinstance(got.events[0], CallStarted)
    assert got.states() == ["listening", "thinking", "speaking", "listening"]
    user = [e for e in got.of(Transcript) if e.role == "user"]
    assistant = [e for e in got.of(Transcript) if e.role == "assistant"]
    assert user[0].final
    assert assistant[-1].final
    assert assistant[-1].text.startswith("I heard ")
    assert isinstance(got.events[-1], Ended)
    assert got.events[-1].reason == "hangup"


async def test_barge_in_flushes_the_reply_and_cancels_it_upstream() -> None:
    emulator = EmulatorConfig(reply="tone", tone_seconds=6.0, reply_speed=1.0, reply_delay_s=0.05)
    async with bridge_on(emulator) as bridge:
        pipe = await bridge.open_pipe(input_rate=16000, output_rate=16000)
        got = Collector(pipe)
        await speak(pipe, utterance(16000))
        await wait_for(lambda: "speaking" in got.states(), 10)
        await asyncio.sleep(0.5)
        await speak(pipe, sine_pcm(1.0, 16000), realtime=True)  # talk over the reply
        await wait_for(lambda: got.of(Interrupted), 5)
        await asyncio.sleep(1.0)
        after = len(got.audio) - (got.audio_at_interrupt or 0)
        await pipe.close()
        await got.finished()
        record = bridge.emulator.sessions[0]  # type: ignore[attr-defined]

    assert "response.cancel" in record.client_events
    # the 6 s tone stopped at once: after the interrupt at most what was in flight
    assert after < 16000 * 2 * 0.3, after / 32
    assert len(got.audio) / 32000 < 4.0
    assert pipe.conversation.stats["barge_ins"] == 1


async def test_push_to_talk_sends_audio_only_while_pressed() -> None:
    async with bridge_on() as bridge:
        pipe = await bridge.open_pipe(input_rate=8000, output_rate=8000, mode="manual")
        got = Collector(pipe)
        await speak(pipe, sine_pcm(0.5, 8000))  # not pressed: goes nowhere
        assert pipe.push_to_talk(True)
        await speak(pipe, sine_pcm(1.2, 8000))
        assert pipe.push_to_talk(False)
        await wait_for(lambda: any(e.role == "assistant" and e.final for e in got.of(Transcript)))
        pipe.push_to_talk(True)
        await speak(pipe, sine_pcm(0.05, 8000))  # too short a press
        pipe.push_to_talk(False)
        await wait_for(lambda: got.of(CallError), 5)
        await pipe.close()
        await got.finished()
        record = bridge.emulator.sessions[0]  # type: ignore[attr-defined]

    assert got.events[0] == CallStarted(
        call_id=pipe.id, mode="manual", voice="Chelsie", model="qwen-omni-turbo-realtime"
    )
    assert abs(record.audio_seconds_total - 1.25) < 0.06, record.audio_seconds_total
    assert record.client_events.count("input_audio_buffer.commit") == 1
    assert record.client_events.count("response.create") == 1
    assert got.of(CallError)[0].message.startswith("Too short")


async def test_push_to_talk_refused_in_hands_free_mode() -> None:
    async with bridge_on() as bridge, await bridge.open_pipe() as pipe:
        got = Collector(pipe)
        assert not pipe.push_to_talk(True)
        await wait_for(lambda: got.of(CallError), 2)
    assert "hands-free" in got.of(CallError)[0].message


async def test_dtmf_reaches_listeners_and_metrics() -> None:
    async with bridge_on() as bridge:
        pipe = await bridge.open_pipe()
        got = Collector(pipe)
        pipe.dtmf("5", 120)
        pipe.dtmf("#", 80)
        pipe.dtmf("x", 80)  # not a keypad key: ignored
        await wait_for(lambda: len(got.of(Dtmf)) == 2, 2)
        await pipe.close()
        metrics = bridge.metrics.render().decode()
    assert got.of(Dtmf) == [Dtmf("5", 120), Dtmf("#", 80)]
    assert 'omni_rtc_dtmf_digits_total{transport="pipe"} 2.0' in metrics


async def test_session_limit_renews_the_session_and_the_call_goes_on() -> None:
    emulator = EmulatorConfig(idle_timeout_s=1.0, reply_delay_s=0.05)
    async with bridge_on(emulator) as bridge:
        pipe = await bridge.open_pipe()
        got = Collector(pipe)
        await wait_for(lambda: got.of(Notice), 5)
        await speak(pipe, utterance(16000))
        await wait_for(lambda: any(e.role == "assistant" and e.final for e in got.of(Transcript)))
        assert not pipe.closed.is_set()
        await pipe.close()
        sessions = list(bridge.emulator.sessions)  # type: ignore[attr-defined]
        metrics = bridge.metrics.render().decode()
    assert len(sessions) >= 2
    assert sessions[-1].audio_seconds_total > 2
    assert "renewed" in got.of(Notice)[0].message
    rollovers = re.search(r"^omni_rtc_upstream_rollovers_total (\S+)$", metrics, re.M)
    assert rollovers is not None
    assert float(rollovers[1]) == len(sessions) - 1


async def test_pipe_rejects_odd_rates_and_counts_capacity() -> None:
    async with bridge_on(max_calls=1) as bridge:
        with pytest.raises(ValueError, match="input_rate must be one of"):
            await bridge.open_pipe(input_rate=11025)
        first = await bridge.open_pipe()
        from omni_rtc import CapacityError

        with pytest.raises(CapacityError):
            await bridge.open_pipe()
        assert bridge.calls.active == 1
        await first.close()
        await wait_for(lambda: bridge.calls.active == 0, 2)
        second = await bridge.open_pipe()
        await second.close()
        metrics = bridge.metrics.render().decode()
    assert 'omni_rtc_calls_failed_total{reason="capacity",transport="pipe"} 1.0' in metrics
    assert 'omni_rtc_calls_total{transport="pipe"} 2.0' in metrics


async def test_silence_is_not_a_turn() -> None:
    async with bridge_on() as bridge, await bridge.open_pipe() as pipe:
        got = Collector(pipe)
        await speak(pipe, silence_pcm(2.0, 16000))
        await asyncio.sleep(0.3)
    assert got.states() == ["listening"]


async def test_maximum_length_ends_the_call_and_renewals_do_not_extend_it() -> None:
    emulator = EmulatorConfig(idle_timeout_s=0.8, reply_delay_s=0.05)  # renews every 0.8 s
    async with bridge_on(emulator, max_call_seconds=2.5, idle_seconds=0) as bridge:
        pipe = await bridge.open_pipe()
        got = Collector(pipe)
        loop = asyncio.get_running_loop()
        opened = loop.time()
        await asyncio.wait_for(pipe.closed.wait(), 6)
        lasted = loop.time() - opened
        await got.finished()
        sessions = len(bridge.emulator.sessions)  # type: ignore[attr-defined]
    assert sessions >= 3  # renewed at least twice, and still ended on time
    assert got.events[-1] == Ended("max_duration")
    assert 2.4 <= lasted < 4.0, lasted


async def test_idle_caller_is_warned_then_hung_up_and_speech_resets_the_clock() -> None:
    async with bridge_on(idle_seconds=3) as bridge:
        pipe = await bridge.open_pipe()
        got = Collector(pipe)
        await asyncio.sleep(1.0)
        await speak(pipe, utterance(16000), realtime=True)  # speech: the clock restarts
        await wait_for(lambda: "speaking" in got.states(), 10)
        spoke_at = asyncio.get_running_loop().time()
        await asyncio.wait_for(pipe.closed.wait(), 10)
        ended_after = asyncio.get_running_loop().time() - spoke_at
        await got.finished()
    notices = [e.message for e in got.of(Notice)]
    assert any("the call ends in" in n for n in notices), notices
    assert got.events[-1] == Ended("idle")
    assert ended_after > 2.0  # not the 3 s since the call began: the reply and speech count


async def test_an_image_lost_to_the_services_commit_is_not_an_error_for_the_caller() -> None:
    # The race: the service's VAD commits the buffer while an image is on its way, so the
    # image lands on an empty buffer and the service answers with an error event. Too
    # timing-bound to provoke over the socket: the service's events go to the handler.
    from omni_rtc.realtime.events import ErrorEvent

    async with bridge_on() as bridge, await bridge.open_pipe() as pipe:
        got = Collector(pipe)
        upstream = pipe.conversation._upstream  # the handler of the service's events
        upstream._error(ErrorEvent(error={"message": "Error append image before append audio."}))
        upstream._error(ErrorEvent(error={"message": "Something else broke"}))
        await wait_for(lambda: got.of(CallError), 2)
        await asyncio.sleep(0.1)
    assert [e.message for e in got.of(CallError)] == ["Model service: Something else broke"]
