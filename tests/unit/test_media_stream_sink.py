"""The media-stream reply sink: 20 ms frames, marks, what was heard, clear at barge-in."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from omni_rtc.transports import media_stream_sink
from omni_rtc.transports.media_stream_dialects import DIALECTS, PCMU
from omni_rtc.transports.media_stream_sink import MediaStreamSink, Outbox

RATE = 8000


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock) -> tuple[MediaStreamSink, Outbox, list[str]]:
    outbox = Outbox()
    sink = MediaStreamSink(DIALECTS["twilio"], "MZ1", PCMU, outbox, clock=clock)
    drained: list[str] = []
    sink.on_drained = lambda: drained.append("drained")
    return sink, outbox, drained


def take(outbox: Outbox) -> list[dict]:
    out = []
    while len(outbox):
        out.append(json.loads(outbox._items.popleft()))
    return out


def pcm(seconds: float) -> bytes:
    return b"\x10\x00" * int(seconds * RATE)


def test_reply_goes_out_in_20ms_frames_with_marks_and_plays_until_its_last_mark() -> None:
    clock = Clock()
    sink, outbox, drained = make(clock)
    sink.new_reply()
    sink.push(pcm(0.55) + b"\x10")  # 27.5 frames and an odd byte
    sink.end_of_reply()
    sent = take(outbox)
    media = [m for m in sent if m["event"] == "media"]
    marks = [m["mark"]["name"] for m in sent if m["event"] == "mark"]
    assert [len(base64.b64decode(m["media"]["payload"])) for m in media] == [160] * 27 + [80]
    assert all(m["streamSid"] == "MZ1" for m in sent)
    assert len(marks) == 2  # one after 0.5 s of audio, one at the end
    assert sent[-1]["event"] == "mark"
    assert sink.playing
    # the far end plays in real time: half-way, half was heard (by the clock)
    clock.now += 0.25
    assert sink.reply_samples_played == 2000
    clock.now += 0.25
    assert sink.mark_echoed(marks[0])
    assert sink.playing
    assert drained == []
    assert not sink.mark_echoed("someone-else")
    clock.now += 0.05
    assert sink.mark_echoed(marks[1])
    assert not sink.playing
    assert drained == ["drained"]
    assert sink.reply_samples_played == 4400
    sink.end_of_reply()  # the conversation says it twice: no second mark
    assert take(outbox) == []


def test_a_late_far_end_is_believed_over_the_clock() -> None:
    clock = Clock()
    sink, outbox, _ = make(clock)
    sink.new_reply()
    sink.push(pcm(1.0))
    marks = [m["mark"]["name"] for m in take(outbox) if m["event"] == "mark"]
    clock.now += 0.9  # the clock says 0.9 s played, but the far end started late:
    assert sink.mark_echoed(marks[0])  # only now has it played the first half
    assert sink.reply_samples_played == 4000
    clock.now += 0.1
    assert sink.reply_samples_played == 4800


def test_flush_sends_clear_ahead_of_unsent_frames_and_forgets_pending_marks() -> None:
    clock = Clock()
    sink, outbox, drained = make(clock)
    sink.new_reply()
    sink.push(pcm(2.0))
    marks = [json.loads(t)["mark"]["name"] for t in outbox._items if '"mark"' in t]
    clock.now += 0.6
    dropped_ms = sink.flush()
    assert [json.loads(t) for t in outbox._items] == [{"event": "clear", "streamSid": "MZ1"}]
    assert 1350 <= dropped_ms <= 1450
    assert sink.reply_samples_played == 4800  # frozen at what was heard
    assert not sink.playing
    assert not any(sink.mark_echoed(name) for name in marks)  # Twilio echoes them after clear
    assert drained == []
    assert sink.flush() == 0  # nothing left to clear
    assert len(outbox) == 1


async def test_a_far_end_that_never_echoes_marks_does_not_keep_the_reply_playing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(media_stream_sink, "MARK_GRACE_S", 0.05)
    outbox = Outbox()
    sink = MediaStreamSink(DIALECTS["twilio"], "MZ1", PCMU, outbox)
    drained = asyncio.Event()
    sink.on_drained = drained.set
    sink.new_reply()
    sink.push(pcm(0.1))
    sink.end_of_reply()
    await asyncio.wait_for(drained.wait(), 2)
    assert not sink.playing
    assert sink.reply_samples_played == 800


def test_a_new_reply_behind_one_still_playing() -> None:
    clock = Clock()
    sink, outbox, drained = make(clock)
    sink.new_reply()
    sink.push(pcm(0.2))
    sink.end_of_reply()
    first_end = [json.loads(t) for t in outbox._items][-1]["mark"]["name"]
    sink.new_reply()  # the next response starts while the far end still plays the first
    sink.push(pcm(0.2))
    assert sink.reply_samples_played == 0
    assert sink.mark_echoed(first_end)
    assert drained == []  # the second reply is still playing
    assert sink.playing


def test_outbox_is_bounded() -> None:
    outbox = Outbox(limit=3)
    for i in range(5):
        outbox.put(str(i))
    assert len(outbox) == 3
    assert outbox.dropped == 2
    assert outbox.interrupt("clear") == 3
    assert list(outbox._items) == ["clear"]
