"""One emulated realtime session: the service's behaviour for one WebSocket connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import av
import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..media.jpeg import InvalidImage, inspect_jpeg
from ..media.resample import Resampler
from ..realtime import codec
from ..realtime import events as ev
from ..realtime.profiles import ModelInfo
from .config import INPUT_RATE, OUTPUT_RATE, EmulatorConfig
from .record import ImageRecord, SessionRecord
from .replies import (
    UserTurn,
    new_id,
)
from .responses import Abort, Responses
from .session_rules import SessionUpdateError, apply_session_update, default_session
from .vad import EnergyVad

log = logging.getLogger("omni_rtc.emulator")


class EmulatedSession(Responses):
    def __init__(
        self,
        ws: ServerConnection,
        config: EmulatorConfig,
        model: ModelInfo,
        record: SessionRecord,
        *,
        faults: bool = True,
    ) -> None:
        self.ws = ws
        self.config = config
        self.faults = faults
        """Whether this session gets the configured fault injections."""
        self.partitioned = False
        self.model = model
        self.record = record
        self.session = default_session(record.session_id, model)
        self.vad: EnergyVad | None = None
        self._configure_vad()
        self.buffer = bytearray()
        self.buffer_images: list[tuple[int, int]] = []
        self.buffer_start_samples = 0
        self.total_samples = 0
        self.speech_item_id = ""
        self.speech_start_ms = 0
        self.pending_turns: list[tuple[str, UserTurn]] = []
        self.previous_item_id: str | None = None
        self.response_task: asyncio.Task[None] | None = None
        self.response_id: str | None = None
        self.audio_produced = False
        self.last_activity = time.monotonic()
        self.replies_started = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.conversation_id = new_id("conv")
        self._live: Resampler | None = None

    # ---------------------------------------------------------------- plumbing

    async def send(self, event: ev.Event) -> None:
        if self.partitioned:
            return
        data = codec.event_to_dict(event)
        data.setdefault("event_id", new_id("event"))
        if isinstance(event, ev.AudioDelta):
            self.record.server_events.append({"type": data["type"], "bytes": len(event.delta)})
        else:
            self.record.server_events.append(data)
        await self.ws.send(json.dumps(data, separators=(",", ":"), ensure_ascii=False))

    async def error(
        self,
        message: str,
        *,
        code: str = "",
        param: str | None = None,
        kind: str = "invalid_request_error",
        event_id: str | None = None,
    ) -> None:
        err: dict[str, Any] = {"type": kind, "code": code, "message": message, "param": param}
        if event_id:
            err["event_id"] = event_id
        await self.send(ev.ErrorEvent(error=err))

    def _configure_vad(self) -> None:
        td = self.session.get("turn_detection")
        if td is None:
            self.vad = None
            return
        self.vad = EnergyVad(
            sample_rate=INPUT_RATE,
            threshold=float(td["threshold"]),
            prefix_padding_ms=int(td["prefix_padding_ms"]),
            silence_duration_ms=int(td["silence_duration_ms"]),
        )

    @property
    def response_active(self) -> bool:
        return self.response_task is not None and not self.response_task.done()

    def _abort(self) -> None:
        log.warning("session %s: dropping the connection (fault injection)", self.record.session_id)
        self.ws.transport.abort()

    # ---------------------------------------------------------------- main loop

    async def run(self) -> None:
        await self.send(ev.SessionCreated(session=self.session))
        self._tasks.append(asyncio.create_task(self._watchdog()))
        if self.faults and self.config.drop_after_s is not None:
            self._tasks.append(asyncio.create_task(self._drop_later(self.config.drop_after_s)))
        if self.faults and self.config.partition_after_s is not None:
            delay = self.config.partition_after_s
            self._tasks.append(asyncio.create_task(self._partition_later(delay)))
        try:
            async for raw in self.ws:
                try:
                    event = codec.decode_client_event(raw)
                except ev.ProtocolError as exc:
                    await self.error(str(exc))
                    continue
                self.record.client_events.append(event.type)
                try:
                    await self.handle(event)
                except Abort:
                    return
        finally:
            for task in [*self._tasks, self.response_task]:
                if task is not None:
                    task.cancel()
            for task in [*self._tasks, self.response_task]:
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _drop_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._abort()

    async def _partition_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        log.warning("session %s: going silent (fault injection)", self.record.session_id)
        self.partitioned = True
        self.ws.transport.pause_reading()

    async def _watchdog(self) -> None:
        idle = self.config.idle_timeout_s
        cap = self.config.max_session_s
        tick = max(0.05, min(1.0, idle / 4, cap / 4))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now - self.record.started >= cap:
                await self._close_with_error(
                    f"Your session was closed because it exceeded the maximum duration of "
                    f"{cap / 60:g} minutes.",
                    code="SessionTimeout",
                )
                return
            if not self.response_active and now - self.last_activity >= idle:
                await self._close_with_error(
                    "Your session was closed because no response was generated for "
                    f"{idle:g} seconds.",
                    code="SessionTimeout",
                )
                return

    async def _close_with_error(self, message: str, *, code: str, close_code: int = 1000) -> None:
        log.info("session %s: closing: %s", self.record.session_id, message)
        with contextlib.suppress(ConnectionClosed):
            await self.error(message, code=code)
        await self.ws.close(close_code, message[:120])

    # ---------------------------------------------------------------- events

    async def handle(self, event: ev.Event) -> None:
        if isinstance(event, ev.InputAudioBufferAppend):
            await self._append_audio(event.audio)
        elif isinstance(event, ev.InputImageBufferAppend):
            await self._append_image(event.image)
        elif isinstance(event, ev.SessionUpdate):
            await self._session_update(event)
        elif isinstance(event, ev.InputAudioBufferCommit):
            await self._commit(event)
        elif isinstance(event, ev.InputAudioBufferClear):
            self._reset_buffer()
            await self.send(ev.InputAudioBufferCleared())
        elif isinstance(event, ev.ResponseCreate):
            await self._response_create(event)
        elif isinstance(event, ev.ResponseCancel):
            if not self.response_active:
                await self.error("Conversation has none active response", event_id=event.event_id)
            else:
                await self._cancel_response("client_cancelled")
        elif isinstance(event, ev.SessionFinish):
            await self.send(ev.SessionFinished())
            await self.ws.close(1000, "session finished")
            raise Abort
        else:
            await self.error(
                f"Unsupported event type '{event.type}'", param="type", event_id=event.event_id
            )

    async def _session_update(self, event: ev.SessionUpdate) -> None:
        try:
            self.session = apply_session_update(
                self.session, event.session, self.model, audio_produced=self.audio_produced
            )
        except SessionUpdateError as exc:
            await self.error(exc.message, code=exc.code, param=exc.param, event_id=event.event_id)
            return
        self._configure_vad()
        await self.send(ev.SessionUpdated(session=self.session))

    async def _append_audio(self, pcm: bytes) -> None:
        pcm = pcm[: len(pcm) - len(pcm) % 2]
        if not pcm:
            return
        now = time.monotonic()
        self.record.add_audio(pcm, now)
        self.buffer += pcm
        self.total_samples += len(pcm) // 2
        if self.config.reply == "live":
            await self._live_echo(pcm)
            return
        if self.vad is None:
            return
        for vad_event in self.vad.feed(pcm):
            if vad_event.kind == "start":
                await self._speech_started(vad_event.ms)
            else:
                await self._speech_stopped(vad_event.ms)

    async def _live_echo(self, pcm: bytes) -> None:
        if self._live is None:
            self._live = Resampler(format="s16", layout="mono", rate=OUTPUT_RATE)
            self.response_id = new_id("resp")
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = INPUT_RATE
        out = b"".join(bytes(f.planes[0])[: f.samples * 2] for f in self._live.resample(frame))
        if out:
            await self.send(ev.AudioDelta(response_id=self.response_id or "", delta=out))
        if len(self.buffer) > INPUT_RATE * 2 * 10:
            self._reset_buffer()  # keep memory flat: nothing is ever committed in live mode

    async def _speech_started(self, buffer_ms: int) -> None:
        self.speech_item_id = new_id("item")
        self.speech_start_ms = buffer_ms
        await self.send(ev.SpeechStarted(audio_start_ms=buffer_ms, item_id=self.speech_item_id))
        if self.response_active:
            await self._cancel_response("turn_detected")

    async def _speech_stopped(self, buffer_ms: int) -> None:
        item_id = self.speech_item_id or new_id("item")
        session_ms = self.buffer_start_samples * 1000 // INPUT_RATE + buffer_ms
        await self.send(ev.SpeechStopped(audio_end_ms=session_ms, item_id=item_id))
        turn = self._take_buffer(self.speech_start_ms, buffer_ms)
        await self._committed(item_id)
        await self._user_item_created(item_id)
        self._start_response(turn, {}, transcribe=[(item_id, turn)])

    async def _committed(self, item_id: str) -> None:
        await self.send(
            ev.InputAudioBufferCommitted(item_id=item_id, previous_item_id=self.previous_item_id)
        )

    async def _user_item_created(self, item_id: str) -> None:
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio"}],
        }
        await self.send(
            ev.ConversationItemCreated(item=item, previous_item_id=self.previous_item_id)
        )
        self.previous_item_id = item_id

    def _take_buffer(self, start_ms: int | None = None, end_ms: int | None = None) -> UserTurn:
        audio = bytes(self.buffer)
        if start_ms is not None and end_ms is not None:
            tail_ms = 100
            a = start_ms * INPUT_RATE // 1000 * 2
            b = (end_ms + tail_ms) * INPUT_RATE // 1000 * 2
            audio = audio[a:b]
        max_bytes = int(self.config.max_echo_s * INPUT_RATE) * 2
        turn = UserTurn(audio=audio[-max_bytes:], images=list(self.buffer_images))
        self._reset_buffer()
        return turn

    def _reset_buffer(self) -> None:
        self.buffer_start_samples += len(self.buffer) // 2
        self.buffer.clear()
        self.buffer_images.clear()
        if self.vad is not None:
            self.vad.reset()

    async def _append_image(self, image: bytes) -> None:
        record = ImageRecord(at=time.monotonic(), nbytes=len(image))
        self.record.images.append(record)
        problem = ""
        if not self.buffer:
            problem = "Error append image before append audio."
        elif len(image) > self.config.max_image_bytes:
            problem = (
                f"Image too large: {len(image)} bytes exceeds the limit of "
                f"{self.config.max_image_bytes} bytes."
            )
        else:
            try:
                record.width, record.height = await asyncio.to_thread(inspect_jpeg, image)
            except InvalidImage as exc:
                problem = f"Invalid image: {exc}."
        if problem:
            record.accepted = False
            record.error = problem
            await self.error(problem, param="image")
            return
        self.buffer_images.append((record.width, record.height))

    async def _commit(self, event: ev.InputAudioBufferCommit) -> None:
        if self.vad is not None:
            # What the real service does when a client commits in server-VAD mode.
            await self.error(
                "Internal service error: null", code="InternalError", kind="server_error"
            )
            await self.ws.close(1011, "Internal service error")
            raise Abort
        min_ms = self.config.min_commit_ms
        if min_ms is None:
            min_ms = 1000 if self.model.name.startswith("qwen3.5") else 1
        buffered_ms = len(self.buffer) // 2 * 1000 // INPUT_RATE
        if not self.buffer or buffered_ms < min_ms:
            await self.error(
                "Error committing input audio buffer: buffer too small, or have no audio.",
                event_id=event.event_id,
            )
            return
        item_id = new_id("item")
        turn = self._take_buffer()
        await self._committed(item_id)
        self.pending_turns.append((item_id, turn))

    async def _response_create(self, event: ev.ResponseCreate) -> None:
        if self.response_active:
            await self.error("Conversation already has an active response", event_id=event.event_id)
            return
        if self.vad is not None and self.vad.speaking:
            await self.error(
                "Cannot create response while user is speaking.", event_id=event.event_id
            )
            return
        pending, self.pending_turns = self.pending_turns, []
        for item_id, _turn in pending:
            await self._user_item_created(item_id)
        turn: UserTurn | None = None
        if pending:
            turn = UserTurn(
                audio=b"".join(t.audio for _, t in pending),
                images=[img for _, t in pending for img in t.images],
            )
        self._start_response(turn, event.response or {}, transcribe=pending)
