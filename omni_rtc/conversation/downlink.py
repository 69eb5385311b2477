"""Model -> caller: reply audio into the transport's sink at its rate, barge-in, and the
reply latency and underrun figures."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

from ..media.pcm_resampler import PcmResampler
from ..realtime.errors import RealtimeError
from .events import Interrupted

if TYPE_CHECKING:
    from .core import Conversation

log = logging.getLogger("omni_rtc.call")


class Downlink:
    def __init__(self, conversation: Conversation) -> None:
        self.conv = conversation
        sink = conversation.sink
        self._resampler = PcmResampler(conversation.profile.output_rate, sink.sample_rate)
        self._turn_ended_at: float | None = None
        self._underruns_reported = 0
        self._caught_up_reported = 0
        sink.on_drained = self._drained

    def turn_ended(self) -> None:
        """The caller finished a turn: reply latency is measured from here."""
        self._turn_ended_at = time.monotonic()

    def play(self, pcm: bytes) -> None:
        """Reply audio at the provider's output rate -> the sink, at the sink's rate."""
        conv, sink = self.conv, self.conv.sink
        if not sink.playing and self._turn_ended_at is not None:
            conv.metrics.reply_latency.observe(time.monotonic() - self._turn_ended_at)
            self._turn_ended_at = None
        sink.push(self._resampler.convert(pcm))
        conv.stats["reply_ms"] = conv.stats.get("reply_ms", 0) + len(pcm) * 500 // (
            conv.profile.output_rate
        )
        conv.bytes_down.inc(len(pcm))
        if conv.state != "speaking":
            conv.set_state("speaking")

    def end_of_reply(self) -> None:
        rest = self._resampler.drain()
        if rest:
            self.conv.sink.push(rest)
        self.conv.sink.end_of_reply()

    def reply_done(self) -> None:
        """The response is over (``response.done``)."""
        self.end_of_reply()
        self.report_underruns()
        conv = self.conv
        if not conv.sink.playing and conv.state != "listening":
            conv.set_state("listening")

    def drop(self) -> int:
        """Silence the reply at once; returns the milliseconds dropped."""
        dropped = self.conv.sink.flush()
        self._resampler.reset()
        self._turn_ended_at = None
        return dropped

    async def barge_in(self) -> None:
        """The caller talks over the reply: silence it now, then stop it upstream."""
        conv, sink = self.conv, self.conv.sink
        dropped = self.drop()
        played_ms = sink.reply_samples_played * 1000 // sink.sample_rate
        conv.ignore_current_response()
        conv.stats["barge_ins"] += 1
        conv.metrics.barge_ins.inc()
        conv.emit(Interrupted())
        log.info("call %s: barge-in, dropped %d ms of queued reply", conv.id, dropped)
        if conv.client is not None:
            with contextlib.suppress(RealtimeError):
                await conv.client.barge_in(played_ms)

    def release(self) -> None:
        self._resampler.reset()

    def _drained(self) -> None:
        self.report_underruns()
        conv = self.conv
        response_active = conv.client is not None and conv.client.state.response_active
        if not response_active and conv.state == "speaking":
            conv.set_state("listening")

    def report_underruns(self) -> None:
        new = self.conv.sink.underruns - self._underruns_reported
        if new > 0:
            self.conv.metrics.reply_underruns.inc(new)
            self._underruns_reported += new
        caught_up = caught_up_ms(self.conv.sink) - self._caught_up_reported
        if caught_up > 0:
            self.conv.metrics.reply_caught_up.inc(caught_up / 1000)
            self._caught_up_reported += caught_up


def caught_up_ms(sink: object) -> int:
    """Quiet reply audio a paced sink skipped to catch up (an optional sink attribute)."""
    return int(getattr(sink, "caught_up_ms", 0))
