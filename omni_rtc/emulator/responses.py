"""What an emulated session says back: the response sequence, reply audio in bursts
faster than real time with the transcript interleaved, and cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ..realtime import events as ev
from .config import INPUT_RATE, OUTPUT_RATE, EmulatorConfig
from .record import SessionRecord
from .replies import (
    UserTurn,
    describe,
    new_id,
    resample_pcm16,
    split_deltas,
    tone,
    usage,
    user_transcript,
)


class Abort(Exception):
    """Raised inside the session to end it after the socket was closed on purpose."""


class Responses:
    """The response half of :class:`~omni_rtc.emulator.session.EmulatedSession`."""

    config: EmulatorConfig
    record: SessionRecord
    session: dict[str, Any]
    faults: bool
    response_task: asyncio.Task[None] | None
    response_id: str | None
    audio_produced: bool
    last_activity: float
    replies_started: int
    conversation_id: str
    previous_item_id: str | None

    async def send(self, event: ev.Event) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError

    def _start_response(
        self,
        turn: UserTurn | None,
        options: dict[str, Any],
        *,
        transcribe: list[tuple[str, UserTurn]],
    ) -> None:
        self.response_id = new_id("resp")
        self.last_activity = time.monotonic()
        self.response_task = asyncio.create_task(
            self._respond(self.response_id, turn, options, transcribe)
        )

    async def _cancel_response(self, reason: str) -> None:
        task, response_id = self.response_task, self.response_id
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.response_task = None
        self.last_activity = time.monotonic()
        if self.config.done_after_cancel:
            await self.send(
                ev.ResponseDone(
                    response={
                        "id": response_id,
                        "object": "realtime.response",
                        "conversation_id": self.conversation_id,
                        "status": "cancelled",
                        "status_details": {"type": "cancelled", "reason": reason},
                        "output": [],
                        "usage": usage(None, "", 0.0),
                    }
                )
            )

    def _reply_audio(self, turn: UserTurn | None) -> bytes:
        if turn is not None and self.config.reply == "echo" and turn.audio:
            return resample_pcm16(turn.audio, INPUT_RATE, OUTPUT_RATE)
        seconds = self.config.tone_seconds if turn is not None else 0.3
        return tone(seconds, OUTPUT_RATE, self.config.tone_hz)

    async def _respond(
        self,
        response_id: str,
        turn: UserTurn | None,
        options: dict[str, Any],
        transcribe: list[tuple[str, UserTurn]],
    ) -> None:
        self.record.responses += 1
        self.replies_started += 1
        modalities = options.get("modalities") or self.session["modalities"]
        with_audio = "audio" in modalities
        response: dict[str, Any] = {
            "id": response_id,
            "object": "realtime.response",
            "conversation_id": self.conversation_id,
            "status": "in_progress",
            "modalities": modalities,
            "voice": self.session["voice"],
            "output": [],
        }
        await self.send(ev.ResponseCreated(response=response))
        if self.session.get("input_audio_transcription"):
            for item_id, user_turn in transcribe:
                await self.send(
                    ev.InputTranscriptionCompleted(
                        item_id=item_id, content_index=0, transcript=user_transcript(user_turn)
                    )
                )
        item_id = new_id("item")
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        ids: dict[str, Any] = {
            "response_id": response_id,
            "item_id": item_id,
            "output_index": 0,
            "content_index": 0,
        }
        await self.send(ev.OutputItemAdded(response_id=response_id, output_index=0, item=item))
        await self.send(
            ev.ConversationItemCreated(item=item, previous_item_id=self.previous_item_id)
        )
        self.previous_item_id = item_id
        part_type = "audio" if with_audio else "text"
        await self.send(ev.ContentPartAdded(**ids, part={"type": part_type, "text": ""}))
        if self.config.reply_delay_s > 0:
            await asyncio.sleep(self.config.reply_delay_s)

        text = describe(turn)
        seconds = 0.0
        if with_audio:
            seconds = await self._stream_audio(ids, text, turn)
            await self.send(ev.AudioTranscriptDone(**ids, transcript=text))
            await self.send(ev.AudioDone(**ids))
            part = {"type": "audio", "transcript": text}
        else:
            for delta in split_deltas(text, 6):
                await self.send(ev.TextDelta(**ids, delta=delta))
            await self.send(ev.TextDone(**ids, text=text))
            part = {"type": "text", "text": text}
        await self.send(ev.ContentPartDone(**ids, part=part))
        done_item = {**item, "status": "completed", "content": [part]}
        await self.send(ev.OutputItemDone(response_id=response_id, output_index=0, item=done_item))
        response.update(status="completed", output=[done_item], usage=usage(turn, text, seconds))
        await self.send(ev.ResponseDone(response=response))
        self.last_activity = time.monotonic()
        self.response_task = None

    async def _stream_audio(self, ids: dict[str, Any], text: str, turn: UserTurn | None) -> float:
        """Send the reply audio in bursts faster than real time, transcript interleaved."""
        pcm = self._reply_audio(turn)
        chunk_bytes = OUTPUT_RATE * self.config.chunk_ms // 1000 * 2
        chunks = [pcm[i : i + chunk_bytes] for i in range(0, len(pcm), chunk_bytes)] or [b""]
        deltas = split_deltas(text, max(1, len(chunks) // 2))
        every = max(1, len(chunks) // len(deltas))
        started = time.monotonic()
        sent_s = 0.0
        drop_at = (
            len(chunks) // 2
            if self.faults and self.config.drop_mid_reply and self.replies_started == 1
            else -1
        )
        for i, chunk in enumerate(chunks):
            if i % every == 0 and deltas:
                await self.send(ev.AudioTranscriptDelta(**ids, delta=deltas.pop(0)))
            if i == drop_at:
                self._abort()
                raise Abort
            await self.send(ev.AudioDelta(**ids, delta=chunk))
            self.audio_produced = True
            sent_s += len(chunk) / 2 / OUTPUT_RATE
            if (i + 1) % self.config.burst_chunks == 0:
                ahead = started + sent_s / self.config.reply_speed - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        for delta in deltas:
            await self.send(ev.AudioTranscriptDelta(**ids, delta=delta))
        return len(pcm) / 2 / OUTPUT_RATE
