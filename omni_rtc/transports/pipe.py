"""Bring your own audio pipe: pcm16 in at your rate, reply pcm16 out at your rate.

For programs that already own the audio (a telephony stack written in Python, a sound
card loop, a file): push caller audio, iterate reply audio and events, close.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType

from ..conversation.core import Conversation
from ..conversation.events import ConversationEvent, Ended
from ..conversation.sinks import PcmReplyQueue

PIPE_RATES = (8000, 16000, 24000, 48000)


def check_rate(name: str, rate: int) -> int:
    if rate not in PIPE_RATES:
        raise ValueError(f"{name} must be one of {', '.join(map(str, PIPE_RATES))}, got {rate}")
    return rate


class AudioPipe:
    """One conversation fed and read by your program.

    Reply audio comes as soon as the model sends it (not paced: play it at your own
    pace). On an ``Interrupted`` event drop what you buffered; the pipe already dropped
    what you had not read.  Use as ``async with await bridge.open_pipe(...) as pipe``.
    """

    def __init__(self, conversation: Conversation, sink: PcmReplyQueue, input_rate: int) -> None:
        self.conversation = conversation
        self.input_rate = check_rate("input_rate", input_rate)
        self.output_rate = check_rate("output_rate", sink.sample_rate)
        self._sink = sink
        self._events = conversation.events()
        conversation.add_listener(self._on_event)

    @property
    def id(self) -> str:
        return self.conversation.id

    @property
    def transport(self) -> str:
        return self.conversation.transport

    @property
    def closed(self) -> asyncio.Event:
        return self.conversation.closed

    @property
    def ended_reason(self) -> str | None:
        return self.conversation.ended_reason

    def _on_event(self, event: ConversationEvent) -> None:
        if isinstance(event, Ended):
            self._sink.close()

    def push(self, pcm: bytes) -> None:
        """Caller audio: pcm16 mono little-endian at ``input_rate``, any chunk size."""
        self.conversation.push_audio(pcm, self.input_rate)

    def reply_audio(self) -> AsyncIterator[bytes]:
        """Reply pcm16 mono at ``output_rate`` as it arrives; ends with the conversation."""
        return self._sink.chunks()

    def events(self) -> AsyncIterator[ConversationEvent]:
        """Every event since the pipe opened (call, transcripts, state, ..., ended)."""
        return self._events

    def push_to_talk(self, pressed: bool) -> bool:
        return self.conversation.push_to_talk(pressed)

    async def send_image(self, jpeg: bytes) -> bool:
        return await self.conversation.send_image(jpeg)

    def dtmf(self, digit: str, duration_ms: int = 0) -> None:
        self.conversation.dtmf(digit, duration_ms)

    async def interrupt(self) -> None:
        """Barge in from your side (your own voice detection, a key press)."""
        await self.conversation.barge_in()

    async def close(self, reason: str = "hangup") -> None:
        await self.conversation.close(reason)
        self._sink.close()

    async def __aenter__(self) -> AudioPipe:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
