"""A demo call handler without a model: echo the caller back after a delay, or a tone.

Used by the tests with real SIP clients and by bench/sip.py."""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from omni_rtc.sip.handler import SipCall

log = logging.getLogger("omni_rtc.sip.demo")


@dataclass
class CallRecord:
    call: SipCall
    audio: bytearray = field(default_factory=bytearray)
    rate: int = 0
    dtmf: list[tuple[str, int]] = field(default_factory=list)
    ended: str | None = None
    echoing: bool = False


class EchoHandler:
    """``mode="echo"``: the caller's audio goes back through the call's ReplyTrack behind a
    ``delay_s`` delay line (silence queued once, then every chunk at once, so network
    jitter never starves the track); ``mode="tone"``: a 440 Hz beep every second;
    ``"silence"``."""

    def __init__(
        self,
        *,
        mode: str = "echo",
        delay_s: float = 0.2,
        max_calls: int = 100,
        keep_audio: bool = True,
        hangup_after_s: float | None = None,
    ) -> None:
        if mode not in ("echo", "tone", "silence"):
            raise ValueError("mode: echo, tone or silence")
        self.mode = mode
        self.delay_s = delay_s
        self.max_calls = max_calls
        self.keep_audio = keep_audio
        self.hangup_after_s = hangup_after_s
        self.active: dict[str, CallRecord] = {}
        self.finished: list[CallRecord] = []
        self.started_total = 0
        self.changed = asyncio.Event()

    def has_room(self) -> bool:
        return len(self.active) < self.max_calls

    async def call_started(self, call: SipCall) -> None:
        self.active[call.id] = CallRecord(call, rate=call.audio_rate)
        self.started_total += 1
        self.changed.set()
        if self.mode == "tone":
            await self._tone(call)
        elif self.hangup_after_s is not None:
            await asyncio.sleep(self.hangup_after_s)
            call.hangup("demo hangup")

    async def _tone(self, call: SipCall) -> None:
        rate = call.audio_rate
        t = np.arange(int(rate * 0.3)) / rate
        beep = (0.3 * 32767 * np.sin(2 * math.pi * 440 * t)).astype("<i2").tobytes()
        started = asyncio.get_running_loop().time()
        while True:
            call.reply_track.push(beep)
            call.reply_track.end_of_reply()
            await asyncio.sleep(1.0)
            elapsed = asyncio.get_running_loop().time() - started
            if self.hangup_after_s is not None and elapsed >= self.hangup_after_s:
                call.hangup("demo hangup")
                return

    def caller_audio(self, call: SipCall, pcm: bytes, rate: int) -> None:
        record = self.active.get(call.id)
        if record is None:
            return
        if self.keep_audio:
            record.audio += pcm
            record.rate = rate
        if self.mode == "echo":
            if not record.echoing:
                record.echoing = True
                call.reply_track.push(bytes(int(self.delay_s * rate) * 2))
            call.reply_track.push(pcm)

    def dtmf(self, call: SipCall, digit: str, duration_ms: int) -> None:
        record = self.active.get(call.id)
        if record is not None:
            record.dtmf.append((digit, duration_ms))
            self.changed.set()

    async def call_ended(self, call: SipCall, reason: str) -> None:
        record = self.active.pop(call.id, None)
        if record is not None:
            record.ended = reason
            self.finished.append(record)
        self.changed.set()
