"""Where a conversation's reply audio goes: the contract, and an unpaced queue for pipes.

A transport supplies the sink: aiortc's :class:`~omni_rtc.media.reply_track.ReplyTrack`
(paced 20 ms frames), an RTP sender, a media-stream socket, or :class:`PcmReplyQueue`
for programs that pace audio themselves.  The conversation resamples to the sink's rate.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol


class ReplySink(Protocol):
    """pcm16 mono at :attr:`sample_rate`; ``flush`` must silence it at once (barge-in)."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def reply_samples_played(self) -> int:
        """Samples of the current reply the caller actually heard (or was handed)."""
        ...

    @property
    def playing(self) -> bool:
        """A reply is queued or still being played."""
        ...

    @property
    def underruns(self) -> int:
        """Frames padded with silence mid-reply because audio ran out (0 if not paced)."""
        ...

    on_drained: Callable[[], None] | None
    """Set by the conversation: called once when a finished reply has been played out.

    A paced sink may also offer ``caught_up_ms`` (quiet reply audio it skipped to shed
    delay, as :class:`~omni_rtc.media.reply_track.ReplyTrack` does): it is counted in the
    metrics and the end-of-call log when present."""

    def push(self, pcm: bytes) -> None: ...

    def new_reply(self) -> None: ...

    def end_of_reply(self) -> None: ...

    def flush(self) -> int:
        """Drop everything queued; returns the milliseconds dropped."""
        ...


class PcmReplyQueue:
    """Reply audio handed over as it arrives, for a program that plays it itself.

    What the reader took counts as played; what it had not taken when the caller
    barged in is dropped here, and the reader drops its own buffer on ``Interrupted``.
    """

    def __init__(self, sample_rate: int, max_seconds: float = 120.0) -> None:
        self.sample_rate = sample_rate
        self.reply_samples_played = 0
        self.on_drained: Callable[[], None] | None = None
        self.underruns = 0
        self._chunks: deque[bytes] = deque()
        self._queued_bytes = 0
        self._max_bytes = int(max_seconds * sample_rate) * 2
        self._in_reply = False
        self._ending = False
        self._closed = False
        self._wakeup = asyncio.Event()

    @property
    def playing(self) -> bool:
        return self._in_reply

    @property
    def queued_ms(self) -> float:
        return self._queued_bytes / 2 * 1000 / self.sample_rate

    def push(self, pcm: bytes) -> None:
        if not pcm or self._closed:
            return
        if self._queued_bytes + len(pcm) > self._max_bytes:
            return  # a reader that stopped reading must not make us hold hours of audio
        self._chunks.append(pcm)
        self._queued_bytes += len(pcm)
        self._in_reply = True
        self._ending = False
        self._wakeup.set()

    def new_reply(self) -> None:
        self.reply_samples_played = 0

    def end_of_reply(self) -> None:
        if self._in_reply:
            self._ending = True
            self._check_drained()

    def flush(self) -> int:
        dropped = self._queued_bytes // 2 * 1000 // self.sample_rate
        self._chunks.clear()
        self._queued_bytes = 0
        self._in_reply = False
        self._ending = False
        return dropped

    def close(self) -> None:
        """End iteration for every reader."""
        self._closed = True
        self.flush()
        self._wakeup.set()

    def _check_drained(self) -> None:
        if self._in_reply and self._ending and not self._chunks:
            self._in_reply = False
            self._ending = False
            if self.on_drained is not None:
                self.on_drained()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Reply pcm as it arrives; ends when the conversation ends."""
        while True:
            while not self._chunks:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            chunk = self._chunks.popleft()
            self._queued_bytes -= len(chunk)
            self.reply_samples_played += len(chunk) // 2
            self._check_drained()
            yield chunk
