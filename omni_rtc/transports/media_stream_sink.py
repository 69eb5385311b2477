"""Reply audio into a telephony media stream, and what the caller really heard.

Twilio (and Telnyx, Plivo) play whatever they are sent from their own buffer, in real
time, until told to ``clear`` it. So the bridge sends reply audio as it comes, in 20 ms
frames, and learns what was played from marks: a mark every half second and one after
each reply, echoed by the far end once the audio before it has been played. The reply
is "playing" until its last mark comes back (then ``on_drained``), and barge-in sends
``clear`` ahead of anything still waiting to be written. Between echoes, a clock model
of the far end's buffer estimates how much was played (for the upstream truncation).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from .media_stream_dialects import Codec, Dialect

log = logging.getLogger("omni_rtc.call")

FRAME_MS = 20
MARK_EVERY_S = 0.5
"""A progress mark after this much reply audio (the end of each reply gets one too)."""
MARK_GRACE_S = 2.0
"""A reply whose last mark has not come back this long after it should have been played
counts as played (a far end that never echoes marks must not keep a call 'speaking')."""
OUTBOX_LIMIT = 20_000
"""Frames waiting to be written (~6 min of audio): a far end that stopped reading loses
the rest instead of growing memory."""


class Outbox:
    """Frames for the socket, in order; :meth:`interrupt` puts one ahead of the rest."""

    def __init__(self, limit: int = OUTBOX_LIMIT) -> None:
        self._items: deque[str] = deque()
        self._ready = asyncio.Event()
        self._limit = limit
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, text: str) -> None:
        if len(self._items) >= self._limit:
            self.dropped += 1
            return
        self._items.append(text)
        self._ready.set()

    def interrupt(self, text: str) -> int:
        """Drop every frame not yet written, then send ``text`` next; returns how many."""
        dropped = len(self._items)
        self._items.clear()
        self.put(text)
        return dropped

    async def get(self) -> str:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


class MediaStreamSink:
    """A :class:`~omni_rtc.conversation.sinks.ReplySink` that writes dialect frames."""

    def __init__(
        self,
        dialect: Dialect,
        stream_id: str,
        codec: Codec,
        outbox: Outbox,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dialect = dialect
        self.stream_id = stream_id
        self.codec = codec
        self.outbox = outbox
        self.sample_rate = codec.sample_rate
        self.on_drained: Callable[[], None] | None = None
        self.underruns = 0  # the far end paces the audio, not us
        self.marks_sent = 0
        self.marks_echoed = 0
        self.clears = 0
        self._clock = clock
        self._frame_bytes = self.sample_rate * FRAME_MS // 1000 * 2
        self._pending = bytearray()
        self._sent = 0
        """Samples handed to the far end since the stream started."""
        self._confirmed = 0
        """Samples the far end has confirmed playing (by echoing a mark)."""
        self._far_end_until = 0.0
        """When the far end runs out of audio if it plays in real time from now on."""
        self._marks: dict[str, int] = {}
        """Marks not echoed yet -> the sample count they follow."""
        self._last_mark_at = 0
        self._reply_start = 0
        self._in_reply = False
        self._ending = False
        self._end_mark: str | None = None
        self._played = 0
        """What the caller heard of the last reply once it is over (drained or cut)."""
        self._overdue: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------- ReplySink

    @property
    def playing(self) -> bool:
        return self._in_reply

    @property
    def reply_samples_played(self) -> int:
        if not self._in_reply:
            return self._played
        heard = self._played_total(self._clock()) - self._reply_start
        return max(0, min(heard, self._sent - self._reply_start))

    def new_reply(self) -> None:
        self._played = 0
        self._reply_start = self._sent

    def push(self, pcm: bytes) -> None:
        if not pcm:
            return
        if not self._in_reply:
            self._in_reply = True
            self._reply_start = self._sent
            self._last_mark_at = self._sent
        if self._ending:  # more audio after the reply seemed to end: it goes on
            self._finish_reply()
            self._in_reply = True
        self._pending += pcm
        whole = len(self._pending) // self._frame_bytes * self._frame_bytes
        for start in range(0, whole, self._frame_bytes):
            self._send_audio(bytes(self._pending[start : start + self._frame_bytes]))
        del self._pending[:whole]

    def end_of_reply(self) -> None:
        if not self._in_reply or self._ending:
            return
        self._ending = True
        if len(self._pending) >= 2:
            self._send_audio(bytes(self._pending[: len(self._pending) // 2 * 2]))
        self._pending.clear()
        name = self._mark()
        self._end_mark = name
        self._watch_overdue(name)

    def flush(self) -> int:
        """Barge-in: ``clear`` goes out ahead of unsent frames; returns the ms dropped."""
        unsent = len(self._pending) // 2
        self._pending.clear()
        if not self._in_reply:
            return unsent * 1000 // self.sample_rate
        now = self._clock()
        played = self._played_total(now)
        self._played = max(0, min(played, self._sent) - self._reply_start)
        dropped = self._sent - played + unsent
        self._marks.clear()
        self._finish_reply()
        self._far_end_until = now
        self._confirmed = self._sent
        self.clears += 1
        self.outbox.interrupt(self.dialect.clear(self.stream_id))
        return dropped * 1000 // self.sample_rate

    # ---------------------------------------------------------------- far end

    def mark_echoed(self, name: str) -> bool:
        """The far end played everything before mark ``name``; False if it is not ours
        (or belongs to audio cleared since)."""
        offset = self._marks.pop(name, None)
        if offset is None:
            return False
        self.marks_echoed += 1
        for older, at in list(self._marks.items()):  # echoes come in order
            if at <= offset:
                del self._marks[older]
        self._confirmed = max(self._confirmed, offset)
        self._far_end_until = self._clock() + (self._sent - offset) / self.sample_rate
        if name == self._end_mark:
            self._drained()
        return True

    # ---------------------------------------------------------------- internals

    def _send_audio(self, pcm: bytes) -> None:
        now = self._clock()
        samples = len(pcm) // 2
        self.outbox.put(self.dialect.media(self.stream_id, self.codec.encode(pcm), self.codec))
        self._sent += samples
        self._far_end_until = max(now, self._far_end_until) + samples / self.sample_rate
        if self._sent - self._last_mark_at >= MARK_EVERY_S * self.sample_rate:
            self._mark()

    def _mark(self) -> str:
        self.marks_sent += 1
        name = f"omni-{self.marks_sent}"
        self._marks[name] = self._sent
        self._last_mark_at = self._sent
        self.outbox.put(self.dialect.mark(self.stream_id, name))
        return name

    def _played_total(self, now: float) -> int:
        buffered = max(0.0, self._far_end_until - now) * self.sample_rate
        return max(self._confirmed, self._sent - round(buffered))

    def _watch_overdue(self, name: str) -> None:
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to schedule
            delay = max(0.0, self._far_end_until - self._clock()) + MARK_GRACE_S
            self._overdue = asyncio.get_running_loop().call_later(delay, self._overdue_check, name)

    def _overdue_check(self, name: str) -> None:
        if self._end_mark == name and self._in_reply:
            log.info(
                "media stream %s: mark %s never came back; taking it as played",
                self.stream_id,
                name,
            )
            self._marks.pop(name, None)
            self._confirmed = self._sent
            self._drained()

    def _drained(self) -> None:
        self._played = self._sent - self._reply_start
        self._finish_reply()
        if self.on_drained is not None:
            self.on_drained()

    def _finish_reply(self) -> None:
        self._in_reply = False
        self._ending = False
        self._end_mark = None
        if self._overdue is not None:
            self._overdue.cancel()
            self._overdue = None
