"""The model's bursty reply audio -> a paced aiortc audio track with instant flush."""

from __future__ import annotations

import asyncio
import fractions
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .opus import OPUS_RATES, OpusEncoder

REPLY_OPUS_BITRATE = 96_000
"""aiortc's bitrate: the same quality (PESQ-WB 4.51 vs 4.53 on espeak speech at 24 kHz),
and at this rate libopus codes in CELT only, which costs half the CPU of its 35 kbit/s
SILK+CELT hybrid (123 vs 221 µs a frame)."""
OPUS_RTP_CLOCK = 48_000
OPUS_RTP_TIME_BASE = fractions.Fraction(1, OPUS_RTP_CLOCK)
QUIET_PEAK = 8
"""20 ms of reply whose samples all lie within ±8 (below -72 dBFS, far under anything
audible) is sent as silence: a pause in a reply costs no encoding once libopus settles."""
RESYNC_AFTER_S = 0.1
"""If the loop falls this far behind schedule, restart the clock instead of bursting."""
CATCH_UP_WINDOW_MS = 500
"""A reply's queue is watched in windows of this length."""
FIRST_LOOK_BACK = 2
"""Windows (1 s) a reply's queue must stay deeper than it needs before that depth is
shed, in a call where shedding has not yet been premature: a late delta then costs a
short call (a question, a beep) its delay for a second, not for the rest of it."""
LEARNED_LOOK_BACK = 10
"""The look-back (5 s) from a call's first premature shed on: a stream whose late deltas
recur keeps the margin they need, for the price of one lesson."""
PREMATURE_WITHIN_MS = 10_000
"""A shed was premature when the reply runs dry this soon after it.  Replayed on the
traced arrivals of 96 calls beside 24 A/V calls on one core, against a fixed 5 s
look-back: the beep call's queue at each beep 30–40 ms shorter, the load calls' queues,
underruns and gaps inside speech about the same; a stream late every 4–5 s pays one
lesson (bench/RESULTS.md, "The beep beside 24 calls")."""
LIVE_RATE = (0.75, 1.25)
"""A window whose pushed audio lies in this range of its duration came at about real
time (a live stream, not a model's faster-than-real-time burst or a drained tail)."""


@dataclass
class ReplyStats:
    frames_sent: int = 0
    reply_frames: int = 0
    """Frames that carried reply audio (not idle silence)."""
    underruns: int = 0
    """Frames padded with silence because audio ran out in the middle of a reply."""
    flushes: int = 0
    dropped_ms: int = 0
    caught_up_ms: int = 0
    """Quiet audio skipped to shed queue delay a late delta left behind (see
    :meth:`ReplyTrack._catch_up`)."""


class ReplyTrack(MediaStreamTrack):
    """Plays pcm16 mono at ``sample_rate`` in 20 ms frames, paced on a monotonic clock.

    ``push`` takes chunks of any size (odd byte counts included); ``flush`` drops
    everything queued so the very next frame out is silence.  pts counts samples, so
    RTP timestamps stay exact; with ``idle="nothing"`` the track sends no frames between
    replies (no encode CPU) and the pts skips ahead by the time that passed.
    """

    kind = "audio"

    def __init__(
        self,
        sample_rate: int = 24_000,
        *,
        frame_ms: int = 20,
        idle: str = "silence",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__()
        if idle not in ("silence", "nothing"):
            raise ValueError("idle must be 'silence' or 'nothing'")
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * frame_ms // 1000
        self.frame_ms = frame_ms
        self.frame_seconds = frame_ms / 1000
        self.frame_bytes = self.frame_samples * 2
        self.idle = idle
        self._clock = clock
        self._sleep = sleep
        self._time_base = fractions.Fraction(1, sample_rate)
        self._queue = bytearray()
        self._odd = b""
        self._in_reply = False
        self._reply_ending = False
        self._replies_ended = 0
        """Replies played out or flushed: a wait in which one ended was not a gap in one."""
        self._start: float | None = None
        self._frame_index = 0
        self._wakeup = asyncio.Event()
        self.silence = bytes(self.frame_bytes)
        """One frame of digital silence."""
        self.stats = ReplyStats()
        self.reply_samples_played = 0
        """Reply samples played since :meth:`new_reply`: how far into the reply the user heard
        (for truncation; quiet frames skipped to catch up count as passed)."""
        self.on_drained: Callable[[], None] | None = None
        """Called once when a reply ended and its last frame went out."""
        self._window_frames = 0
        self._window_floor = 0
        self._window_pushed = 0
        self._floors: deque[int] = deque(maxlen=LEARNED_LOOK_BACK)
        """The queue's lowest depth in each of the last windows, newest last."""
        self._look_back = FIRST_LOOK_BACK
        """Windows of spare depth needed before shedding; kept for the call (its path)."""
        self._shed_at: int | None = None
        """The frame index of the last frame shed in this reply (None: none since it ran dry)."""
        self._catch_up_frames = 0
        self._delay_added = 0
        """Frames of silence this reply was padded with (it ran dry): the delay it has
        gained since it started, and all that catching up may shed."""

    # ---------------------------------------------------------------- feeding

    def push(self, pcm: bytes) -> None:
        if not pcm:
            return
        if self._odd:
            pcm = self._odd + pcm
            self._odd = b""
        if len(pcm) % 2:
            self._odd = pcm[-1:]
            pcm = pcm[:-1]
        self._queue += pcm
        self._window_pushed += len(pcm)
        self._in_reply = True
        self._reply_ending = False
        self._wakeup.set()

    def new_reply(self) -> None:
        """A new response starts: restart the count of what the user heard."""
        self.reply_samples_played = 0
        self._forget_windows()

    def end_of_reply(self) -> None:
        """No more audio for this reply: a short last frame is padded without an underrun."""
        if self._in_reply:
            self._reply_ending = True
            if self.idle == "nothing":
                self._finish_reply_if_drained()  # no frame will be sent to end it
            self._wakeup.set()

    def flush(self) -> int:
        """Drop all queued audio at once (barge-in); returns the milliseconds dropped."""
        dropped = len(self._queue) // 2 * 1000 // self.sample_rate
        self._queue.clear()
        self._odd = b""
        was_playing = self._in_reply
        self._in_reply = False
        self._reply_ending = False
        self._forget_windows()
        if was_playing:
            self._replies_ended += 1
            self.stats.flushes += 1
            self.stats.dropped_ms += dropped
        return dropped

    @property
    def queued_ms(self) -> float:
        return len(self._queue) / 2 * 1000 / self.sample_rate

    @property
    def playing(self) -> bool:
        return self._in_reply

    @property
    def underruns(self) -> int:
        return self.stats.underruns

    @property
    def caught_up_ms(self) -> int:
        """Quiet reply audio skipped so far to catch up (see :meth:`_catch_up`)."""
        return self.stats.caught_up_ms

    # ---------------------------------------------------------------- aiortc side

    async def recv(self) -> av.AudioFrame:
        pcm, pts, _ = await self.next_pcm()
        return self._frame(pcm, pts)

    async def next_pcm(self) -> tuple[bytes, int, bool]:
        """The next paced 20 ms: ``(pcm16, pts in samples, idle)``; ``idle`` is a frame of
        silence sent because no reply is playing (what :class:`OpusReplyTrack` need not
        encode).  :meth:`recv` wraps the same thing in an ``av.AudioFrame``."""
        if self.readyState != "live":
            raise MediaStreamError
        now = self._clock()
        if self._start is None:
            self._start = now
        if self.idle == "nothing" and not self._queue:
            mid_reply = self._in_reply and not self._reply_ending
            replies_ended = self._replies_ended
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                if self.readyState != "live":
                    raise MediaStreamError
            # Skip the pts ahead by the time spent idle; play the first frame at once.
            now = self._clock()
            elapsed_frames = int((now - self._start) / self.frame_seconds)
            if mid_reply and self._replies_ended == replies_ended:
                for _ in range(elapsed_frames - self._frame_index):
                    self._underrun()  # the reply ran dry: what comes now comes that late
            self._frame_index = max(self._frame_index, elapsed_frames)
            self._start = now - self._frame_index * self.frame_seconds
        else:
            due = self._start + self._frame_index * self.frame_seconds
            if due > now:
                await self._sleep(due - now)
            elif now - due > RESYNC_AFTER_S:
                self._start = now - self._frame_index * self.frame_seconds
        return self._next_payload()

    def _next_payload(self) -> tuple[bytes, int, bool]:
        if self._in_reply:
            self._catch_up()
        take = min(len(self._queue), self.frame_bytes)
        idle = False
        if take:
            payload = bytes(self._queue[:take])
            del self._queue[:take]
            self.stats.reply_frames += 1
            self.reply_samples_played += take // 2
            if take < self.frame_bytes:
                if not self._reply_ending:
                    self._underrun()
                payload += self.silence[: self.frame_bytes - take]
        else:
            payload = self.silence
            if self._in_reply and not self._reply_ending:
                self._underrun()
            else:
                idle = True
        pts = self._frame_index * self.frame_samples
        self._frame_index += 1
        self.stats.frames_sent += 1
        self._finish_reply_if_drained()
        return payload, pts, idle

    def _finish_reply_if_drained(self) -> None:
        """A reply that ended and has nothing left to play is over (once)."""
        if not (self._in_reply and self._reply_ending and not self._queue):
            return
        self._in_reply = False
        self._reply_ending = False
        self._replies_ended += 1
        self._forget_windows()
        if self.on_drained is not None:
            self.on_drained()

    def _underrun(self) -> None:
        """The reply ran dry: pad; a shed shortly before was premature, and what is still
        to be shed is not shed any more."""
        self.stats.underruns += 1
        self._delay_added += 1
        self._catch_up_frames = 0
        shed_at = self._shed_at
        if (
            shed_at is not None
            and (self._frame_index - shed_at) * self.frame_ms < PREMATURE_WITHIN_MS
        ):
            self._look_back = LEARNED_LOOK_BACK
        self._shed_at = None

    def _catch_up(self) -> None:
        """Shed the delay a late delta left behind in a reply streamed at real time.

        Audio that arrives at real time is played at real time, so when one delta came
        late (a stall upstream or on this loop) the reply ran dry, was padded with
        silence, and every sample after it reaches the caller that much later, for as
        long as the stream goes on.  When the queue stayed deeper than one frame (the
        floor of a stream that comes on time) through the look-back (:data:`FIRST_LOOK_BACK`
        windows, :data:`LEARNED_LOOK_BACK` once a shed proved premature in this call), each
        window with audio coming at about real time (:data:`LIVE_RATE`), half the depth
        it never needed (rounded up) is shed, up to the padding the reply gained, by
        skipping quiet frames (pauses under :data:`QUIET_PEAK`, never speech), as a
        receiver's jitter buffer drops silence.  A reply that never ran dry (a model's
        faster-than-real-time burst, however it goes on) is played as it came.
        """
        queued = len(self._queue)
        if self._window_frames == 0 or queued < self._window_floor:
            self._window_floor = queued
        self._window_frames += 1
        if self._window_frames * self.frame_ms >= CATCH_UP_WINDOW_MS:
            pushed = self._window_pushed / (self._window_frames * self.frame_bytes)
            low, high = LIVE_RATE
            if low <= pushed <= high:
                self._floors.append(self._window_floor)
                if len(self._floors) >= self._look_back:
                    recent = itertools.islice(reversed(self._floors), self._look_back)
                    spare = min(recent) // self.frame_bytes - 1
                    self._catch_up_frames = max(min((spare + 1) // 2, self._delay_added), 0)
                    if self._catch_up_frames:
                        self._floors.clear()  # their depths are the ones being shed
            else:
                self._floors.clear()
                self._catch_up_frames = 0
            self._window_frames = self._window_pushed = 0
        while (
            self._catch_up_frames
            and queued >= 2 * self.frame_bytes
            and is_quiet(self._queue[: self.frame_bytes])
        ):
            del self._queue[: self.frame_bytes]
            queued -= self.frame_bytes
            self._catch_up_frames -= 1
            self._delay_added -= 1
            self.reply_samples_played += self.frame_samples  # where the reply is now
            self.stats.caught_up_ms += self.frame_ms
            self._shed_at = self._frame_index

    def _forget_windows(self) -> None:
        self._window_frames = self._window_pushed = self._catch_up_frames = 0
        self._delay_added = 0
        self._floors.clear()
        self._shed_at = None

    def _next_frame(self) -> av.AudioFrame:
        """The next frame without pacing (benchmarks)."""
        pcm, pts, _ = self._next_payload()
        return self._frame(pcm, pts)

    def _frame(self, pcm: bytes, pts: int) -> av.AudioFrame:
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.frame_samples)
        frame.planes[0].update(pcm)
        frame.sample_rate = self.sample_rate
        frame.pts = pts
        frame.time_base = self._time_base
        return frame

    def take_paced(self) -> tuple[bytes, int, bool] | None:
        """The next 20 ms for a consumer that keeps time itself (one call of a shared
        clock's beat), as :meth:`next_pcm` gives it; None with ``idle="nothing"`` and
        nothing queued (the pts still moves on: time passed)."""
        if self.idle == "nothing" and not self._queue:
            if self._in_reply and not self._reply_ending:
                self._catch_up()  # the windows keep time
                self._underrun()  # nothing sent, in a reply: what comes next comes late
            self._frame_index += 1
            return None
        return self._next_payload()

    def take_frame(self) -> av.AudioFrame:
        """The next 20 ms frame now, for a consumer that keeps time itself (SIP's shared
        media clock): reply audio if queued, else silence."""
        return self._next_frame()

    def stop(self) -> None:
        super().stop()
        self._wakeup.set()


def is_quiet(pcm: bytes | bytearray) -> bool:
    """Every pcm16 sample within ±:data:`QUIET_PEAK`."""
    samples = np.frombuffer(pcm, dtype="<i2")
    return bool(samples.max() <= QUIET_PEAK and samples.min() >= -QUIET_PEAK)


class OpusReplyTrack(MediaStreamTrack):
    """A :class:`ReplyTrack`'s paced audio as Opus packets, for an Opus RTP sender.

    aiortc encodes the frames a track returns in a worker thread, after resampling them
    to 48 kHz stereo and measuring their level; the packets a track returns it only
    packetizes.  Encoding 20 ms of mono voice here, on the event loop, costs less than
    handing it to that thread.  Silence (between replies, and pauses within one quieter
    than :data:`QUIET_PEAK`) is encoded as digital silence until libopus settles on one
    packet for it, which is then sent again as is, without encoding; the listener's
    decoder stays where the encoder left it, so the next word starts clean.
    """

    kind = "audio"

    def __init__(self, reply: ReplyTrack, *, bitrate: int = REPLY_OPUS_BITRATE) -> None:
        super().__init__()
        self.reply = reply
        self.encoder = OpusEncoder(reply.sample_rate, 1, bitrate=bitrate, frame_ms=reply.frame_ms)
        # pts in Opus's RTP clock (48 kHz whatever the rate, RFC 7587): aiortc then packs
        # each packet without converting its timestamp through three Fractions
        self._time_base = OPUS_RTP_TIME_BASE
        self._pts_scale = OPUS_RTP_CLOCK // reply.sample_rate
        self._silence: bytes | None = None
        self._last_quiet: bytes | None = None
        self.packets_encoded = 0
        self.silence_reused = 0

    @staticmethod
    def supports(reply: ReplyTrack) -> bool:
        return reply.sample_rate in OPUS_RATES and reply.frame_ms in (10, 20, 40, 60)

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        pcm, pts, idle = await self.reply.next_pcm()
        packet = av.Packet(self._encode(pcm, idle))
        packet.pts = pts * self._pts_scale
        packet.time_base = self._time_base
        return packet

    def take_packet(self) -> tuple[bytes, int] | None:
        """The next 20 ms as ``(Opus packet, pts at 48 kHz)`` for a sender on a shared
        clock (:meth:`ReplyTrack.take_paced`); None: nothing to send this beat."""
        taken = self.reply.take_paced()
        if taken is None:
            return None
        pcm, pts, idle = taken
        return self._encode(pcm, idle), pts * self._pts_scale

    def _encode(self, pcm: bytes, idle: bool) -> bytes:
        quiet = idle or is_quiet(pcm)
        if quiet and self._silence is not None:
            data = self._silence
            self.silence_reused += 1
        else:
            data = self.encoder.encode(self.reply.silence if quiet else pcm)
            self.packets_encoded += 1
            if not quiet:
                self._last_quiet = self._silence = None
            elif data == self._last_quiet:
                self._silence = data  # libopus has settled: the same packet from now on
            else:
                self._last_quiet = data
        return data

    def stop(self) -> None:
        super().stop()
        self.reply.stop()
