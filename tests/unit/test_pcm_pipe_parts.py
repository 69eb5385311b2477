"""The pieces under the audio pipe: stateful rate conversion and the reply queue."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from omni_rtc.conversation.sinks import PcmReplyQueue
from omni_rtc.media.pcm_resampler import PcmResampler
from tests.helpers import sine_pcm


@pytest.mark.parametrize(("src", "dst"), [(24_000, 8_000), (24_000, 16_000), (24_000, 48_000)])
def test_chunked_conversion_equals_whole_conversion(src: int, dst: int) -> None:
    """Cutting a reply into odd-sized chunks adds nothing at the boundaries (no crackle)."""
    pcm = sine_pcm(1.0, src, hz=440)
    whole = PcmResampler(src, dst)
    reference = whole.convert(pcm) + whole.drain()
    chunked = PcmResampler(src, dst)
    sizes = [961, 17, 480, 3, 2000]
    out, offset, i = b"", 0, 0
    while offset < len(pcm):
        out += chunked.convert(pcm[offset : offset + sizes[i % len(sizes)]])
        offset += sizes[i % len(sizes)]
        i += 1
    out += chunked.drain()
    assert len(out) == len(reference) == dst * 2
    a = np.frombuffer(out, "<i2").astype(float)
    b = np.frombuffer(reference, "<i2").astype(float)
    assert np.max(np.abs(a - b)) <= 1
    spectrum = np.abs(np.fft.rfft(a))
    assert abs(np.argmax(spectrum) * dst / len(a) - 440) < 2


def test_reset_forgets_held_samples_and_passthrough_is_identity() -> None:
    r = PcmResampler(24_000, 8_000)
    r.convert(sine_pcm(0.1, 24_000))
    r.reset()
    assert r.drain() == b""
    same = PcmResampler(16_000, 16_000)
    data = sine_pcm(0.05, 16_000)
    assert same.convert(data[:101]) + same.convert(data[101:]) == data


async def test_reply_queue_counts_what_was_read_and_drops_the_rest_on_flush() -> None:
    queue = PcmReplyQueue(8000)
    drained: list[int] = []
    queue.on_drained = lambda: drained.append(queue.reply_samples_played)
    queue.new_reply()
    queue.push(bytes(320))
    queue.push(bytes(320))
    assert queue.playing
    chunks = queue.chunks()
    assert await anext(chunks) == bytes(320)
    assert queue.reply_samples_played == 160
    assert queue.flush() == 20  # the unread 20 ms
    assert not queue.playing
    queue.new_reply()
    queue.push(bytes(160))
    queue.end_of_reply()
    assert not drained  # not read yet: not played
    await anext(chunks)
    assert drained == [80]
    queue.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(chunks), 1)


def test_reply_queue_bounds_what_an_absent_reader_makes_it_hold() -> None:
    queue = PcmReplyQueue(8000, max_seconds=1.0)
    for _ in range(100):
        queue.push(bytes(1600))  # 100 ms each
    assert queue.queued_ms == 1000
