"""Decode only the camera frames the sampler will use.

The model takes at most 2 images a second, a camera sends 5 to 30 frames; but an inter
frame decodes only on top of every frame since the last key frame.  :class:`DecodeGate`
decides, frame by frame, whether to decode, and when to ask the sender for a key frame
(RTCP PLI):

- a frame the sampler wants now (its next image is due) is decoded if it can be;
- between images, frames are skipped when a key frame is expected before the next image
  is due: from a sender with a steady key-frame period (measured on the frames' RTP
  timestamps, which a busy loop cannot make jitter, and expected where its least delayed
  frames land), or from a sender that answers PLIs (measured: a key frame arrives soon
  after we ask, off its own schedule);
- otherwise the chain from the last key frame is kept, and the frame is decoded.

A sender that ignores PLIs and sends a key frame every second still yields 2 images a
second: the chain is decoded from the key frame up to the frame the second image needs,
the rest of the second is skipped.  While its call is ``lean`` (the process is
overloaded), a sender with a key frame at least every 2 s is decoded at its key frames
only: an image per key frame (one a second from that sender), far less CPU, so the
calls' audio keeps real time.  A sender that answers PLIs is already decoded that way
when it pays; others (no key frames of their own, or few frames per image) are decoded
as usual.

Chromium answers at most one PLI per 300 ms (libwebrtc ``EncoderRtcpFeedback``,
``kMinKeyframeSendIntervalMs``); aiortc's encoder answers every one.  PLIs are only
relied on when the camera sends many frames per image (asking costs a key frame, several
inter frames' worth of bits); at the 5 frames a second the page asks for, every frame is
decoded.

:class:`VideoDecoder` wraps the gate around FFmpeg's decoder (one thread: it runs on
the event loop) and hands the decoded frame to the sampler.  While the process is busy
(``light``, :mod:`omni_rtc.light_cameras`) inter frames of VP8 senders with a key frame
at least every 2 s are decoded without the loop filter (short chains: little drift),
from their next key frame on (a decoder takes that setting when it opens; other senders
would switch only at a key frame that may be minutes away).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av

log = logging.getLogger("omni_rtc.media")

NEVER = math.inf

PLI_WAIT_S = 0.35
"""A key frame later than this after our PLI was not an answer to it."""
PLI_MIN_GAP_S = 0.45
"""Never ask more often (Chromium ignores PLIs less than 300 ms apart)."""
PLI_DEFAULT_LATENCY_S = 0.15
PROBE_AFTER_S = 2.0
"""Probe only a sender that sent no key frame for this long: one with a shorter period
cannot answer a probe by chance, and its period is learnt instead."""
PROBES_TO_TRUST = 2
"""Probes answered in a row before PLIs are relied on."""
PROBE_MISSES_TO_GIVE_UP = 2
PLI_RETRY_S = 30.0
"""How long a sender that ignored our probes is left alone before asking again."""
FRAMES_PER_IMAGE_FOR_PLI = 6
"""Rely on PLIs only when the camera sends at least this many frames per image."""
PERIOD_TOLERANCE = 0.1
"""Two key-frame intervals within 10% of each other make a steady period."""
KEY_LOSS_DISTRUST_S = 10.0
"""After a key frame of the sender's period went missing (lost on the way, or never
sent: a starved sender drops frames), no frame is skipped in wait for its next ones for
this long, so no image waits for a key frame that may not come (lean decoding, which
takes images from key frames alone, still may)."""
MAX_MEDIA_KEY_INTERVAL_S = 60.0
"""A longer jump between key frames' media times is a restarted sender, not a period."""
LEAN_MAX_KEY_PERIOD_S = 2.0
"""Lean decoding (key frames only) only for a sender with a key frame at least this
often: it still gives an image every 2 s.  Other senders are decoded as usual."""


@dataclass
class GateStats:
    decoded: int = 0
    skipped: int = 0
    key_frames: int = 0
    plis: int = 0
    plis_answered: int = 0
    decode_errors: int = 0


class DecodeGate:
    """Sans-I/O: :meth:`on_frame` says whether to decode and whether to send a PLI.

    ``due`` is when the sampler will next take a frame (``NEVER`` when it takes none,
    e.g. before the caller's first audio); ``now`` the frame's arrival time.

    Whether a sender answers PLIs is learnt from probes, sent only while the chain is
    decoded anyway (no image is lost if nobody answers) and only to a sender quiet for
    :data:`PROBE_AFTER_S` (so that a periodic key frame cannot pass for an answer).
    """

    def __init__(self) -> None:
        self.chain = False
        """The decoder holds every frame since the last key frame."""
        self.stats = GateStats()
        self.pli_state = "unknown"  # "honoured" | "ignored"
        self.pli_latency = PLI_DEFAULT_LATENCY_S
        self._pli_sent_at: float | None = None
        self._pli_purpose = ""  # "probe" | "gating" | "recovery"
        self._last_pli = -NEVER
        self._probe_answers = 0
        self._probe_misses = 0
        self._ignored_at = -NEVER
        self._last_key: float | None = None
        self._last_key_media: float | None = None
        """The last key frame's media time (its RTP timestamp, in seconds), when known."""
        self._period: float | None = None
        """Key-frame period of the sender, once two intervals in a row agreed (on the
        media clock when frames carry their media time, else on arrival)."""
        self._last_interval: float | None = None
        self._media_offset: float | None = None
        """Arrival minus media time of the least delayed frame from the key frame before
        the last one to the last one, both included: where an on-time frame lands on our
        clock."""
        self._offset_window = NEVER
        self._distrust_until = -NEVER
        self._last_gap: float | None = None
        """The last interval between two key frames, answers to PLIs included."""
        self._last_frame: float | None = None
        self._gaps = 0
        self.frame_interval = 1 / 30

    # ---------------------------------------------------------------- predictions

    def slack(self) -> float:
        """How late an image may be to wait for a key frame instead of decoding a chain."""
        return max(0.1, 2 * self.frame_interval)

    def natural_key_at(self, now: float) -> float:
        """When the sender's own next key frame is expected (``NEVER`` if unknown)."""
        period = self._trusted_period(now)
        if period is None or self._last_key is None:
            return NEVER
        if self._last_key_media is not None and self._media_offset is not None:
            expected = self._last_key_media + period + self._media_offset
        else:
            expected = self._last_key + period
        if now > expected + self.slack():
            return NEVER  # the period broke: rely on nothing
        return expected

    def _pli_pays(self, interval: float) -> bool:
        """Many frames per image (measured over ten frames at least)."""
        return self._gaps >= 10 and interval / self.frame_interval >= FRAMES_PER_IMAGE_FOR_PLI

    def _pli_lead(self) -> float:
        return self.pli_latency + self.frame_interval

    def key_available_at(self, now: float, interval: float) -> float:
        """The earliest a fresh key frame can arrive if we skip from now on."""
        eta = self.natural_key_at(now)
        if self.pli_state == "honoured" and self._pli_pays(interval):
            eta = min(eta, now + self._pli_lead())
        return eta

    # ---------------------------------------------------------------- decisions

    def keyed_often(self, now: float, interval: float) -> bool:
        """Key frames come often enough to take images from them alone: the sender's own
        (:meth:`keys_of_its_own_often`), or PLIs are answered and pay (many frames per
        image)."""
        if self.pli_state == "honoured" and self._pli_pays(interval):
            return True
        return self.keys_of_its_own_often(now)

    def keys_of_its_own_often(self, now: float) -> bool:
        """The sender's own key frames: the last two at most :data:`LEAN_MAX_KEY_PERIOD_S`
        apart and the last one no older (no steady period needed: chains from them stay
        short)."""
        last, key_interval = self._last_key, self._last_interval
        return (
            last is not None
            and key_interval is not None
            and key_interval <= LEAN_MAX_KEY_PERIOD_S
            and now - last <= LEAN_MAX_KEY_PERIOD_S + self.slack()
        )

    def on_frame(
        self,
        now: float,
        key: bool,
        due: float,
        interval: float,
        lean: bool = False,
        media_time: float | None = None,
    ) -> tuple[bool, bool]:
        """``(decode, send_pli)`` for a frame arriving at ``now``.

        ``interval`` is the sampler's time between images; ``lean``: this call sheds
        camera work (the process is overloaded): decode only key frames if this sender
        sends them often enough.  ``media_time``: the frame's capture time on the
        sender's clock (its RTP timestamp in seconds, from any origin): key-frame periods
        are then measured on it, exact however late frames arrive on a busy loop.
        """
        if media_time is not None:
            self._offset_window = min(self._offset_window, now - media_time)
        if self._last_frame is not None:
            gap = now - self._last_frame
            if 0 < gap < 1:
                self._gaps += 1
                weight = max(0.1, 1 / self._gaps)  # the mean of the first ten, then EWMA
                self.frame_interval += weight * (gap - self.frame_interval)
        self._last_frame = now
        self._check_pli_timeout(now)
        if key:
            self._key_arrived(now, media_time)
        if due == NEVER:
            decode = False
        elif key:
            # Decode unless another key frame comes before the sampler needs one.
            decode = due - now <= self._key_gap(now, interval) + self.slack()
        elif not self.chain or (lean and self.keyed_often(now, interval)):
            decode = False
        elif due <= now:
            decode = True
        else:
            decode = self.key_available_at(now, interval) > due + self.slack()
        send_pli = False
        if decode:
            self.chain = True
            self.stats.decoded += 1
        else:
            self.chain = False
            self.stats.skipped += 1
            if not key and due != NEVER and self._want_pli(now, due, interval, lean):
                send_pli = True
                purpose = "gating" if self.pli_state == "honoured" else "recovery"
                self._sent_pli(now, purpose)
        return decode, send_pli

    def decode_failed(self) -> None:
        """The decoder refused a frame: nothing decodes until the next key frame."""
        self.chain = False
        self.stats.decode_errors += 1

    def after_sample(self, now: float, interval: float) -> bool:
        """The sampler just took a frame; True to send a probing PLI (to learn whether
        this sender answers them, while the chain is still decoded: no image is lost)."""
        if self.pli_state == "honoured" or self._pli_sent_at is not None:
            return False
        if self.pli_state == "ignored" and now - self._ignored_at < PLI_RETRY_S:
            return False
        quiet_since = self._last_key if self._last_key is not None else now
        if (
            not self.chain
            or self._period is not None  # its own key frames will do
            or not self._pli_pays(interval)
            or now - quiet_since < PROBE_AFTER_S
            or now - self._last_pli < PLI_MIN_GAP_S
            or self._own_key_may_come(now)
        ):
            return False
        self._sent_pli(now, "probe")
        return True

    def _own_key_may_come(self, now: float) -> bool:
        """The last interval between key frames (whatever sent them), repeated, would
        bring one while a probe waits for its answer: it could not tell them apart (a
        sender with a key frame every 2-2.4 s would pass for one that answers)."""
        last, gap = self._last_key, self._last_gap
        if last is None or gap is None:
            return False
        coming = last + gap - now
        return -self.slack() <= coming <= PLI_WAIT_S + self.slack()

    # ---------------------------------------------------------------- bookkeeping

    def _sent_pli(self, now: float, purpose: str) -> None:
        self._pli_sent_at = now
        self._pli_purpose = purpose
        self._last_pli = now
        self.stats.plis += 1

    def _trusted_period(self, now: float) -> float | None:
        """The sender's period, unless a key frame went missing lately."""
        return self._period if now >= self._distrust_until else None

    def _key_gap(self, now: float, interval: float) -> float:
        period = self._trusted_period(now)
        gap = period if period is not None else NEVER
        if self.pli_state == "honoured" and self._pli_pays(interval):
            gap = min(gap, self._pli_lead())
        return gap

    def _want_pli(self, now: float, due: float, interval: float, lean: bool) -> bool:
        """Ask for a key frame when the chain is broken and an image is due soon (lean:
        only from a sender that answers; a periodic one's next key frame will do)."""
        if self._pli_sent_at is not None or now - self._last_pli < PLI_MIN_GAP_S:
            return False
        if lean and self.pli_state != "honoured" and self.keyed_often(now, interval):
            return False
        if self.pli_state == "ignored" and now - self._ignored_at < PLI_RETRY_S:
            return False
        if self.natural_key_at(now) <= due + self.slack():
            return False  # the sender's own key frame will do
        return due - now <= self._pli_lead()

    def _key_arrived(self, now: float, media_time: float | None) -> None:
        self.stats.key_frames += 1
        if media_time is not None and media_time == self._last_key_media:
            return  # the same key frame again (repeated): nothing new about the period
        sent = self._pli_sent_at
        interval = self._key_interval(now, media_time)
        if self._on_schedule(now, media_time, interval):
            sent = None  # on the sender's own schedule: not an answer
        if self._missed_one(media_time, interval):
            self._distrust_until = now + KEY_LOSS_DISTRUST_S
        self._last_gap = interval
        self._last_key = now
        self._last_key_media = media_time
        self._media_offset = None if media_time is None else self._offset_window
        self._offset_window = NEVER if media_time is None else now - media_time
        if sent is not None and now - sent <= PLI_WAIT_S:
            self._pli_sent_at = None
            self.stats.plis_answered += 1
            self.pli_latency += 0.3 * ((now - sent) - self.pli_latency)
            if self._pli_purpose == "probe":
                self._probe_answers += 1
                self._probe_misses = 0
                if self._probe_answers >= PROBES_TO_TRUST:
                    self.pli_state = "honoured"
            # A key frame we asked for says nothing about the sender's own period.
            self._period = self._last_interval = None
            return
        if interval is None:
            self._period = self._last_interval = None
            return
        last = self._last_interval
        steady = last is not None and abs(interval - last) <= PERIOD_TOLERANCE * last
        self._period = interval if steady else None
        self._last_interval = interval

    def _on_schedule(self, now: float, media_time: float | None, interval: float | None) -> bool:
        """This key frame is one the sender's period predicted: on the media clock a
        whole number of periods after the last one (some may have been lost), however
        late it arrived; without media times, its arrival must be close to the predicted
        one."""
        period = self._period
        if period is None:
            return False
        if media_time is not None and self._last_key_media is not None:
            if interval is None:
                return False
            periods = round(interval / period)
            return periods >= 1 and abs(interval - periods * period) <= self.slack()
        natural = self.natural_key_at(now)
        return natural != NEVER and abs(now - natural) <= self.slack()

    def _missed_one(self, media_time: float | None, interval: float | None) -> bool:
        """On the media clock, this key frame came two periods (or more) after the last
        one: the one between never arrived."""
        return (
            media_time is not None
            and interval is not None
            and self._period is not None
            and interval >= 2 * self._period - self.slack()
        )

    def _key_interval(self, now: float, media_time: float | None) -> float | None:
        """Since the last key frame: on the media clock when both carry a media time,
        else on arrival; None for the first key frame, or a media clock that went back
        or jumped (a restarted sender)."""
        if self._last_key is None:
            return None
        if media_time is None or self._last_key_media is None:
            return now - self._last_key
        interval = media_time - self._last_key_media
        return interval if 0 < interval <= MAX_MEDIA_KEY_INTERVAL_S else None

    def _check_pli_timeout(self, now: float) -> None:
        sent = self._pli_sent_at
        if sent is None or now - sent <= PLI_WAIT_S:
            return
        self._pli_sent_at = None
        if self._pli_purpose == "probe":
            self._probe_answers = 0
            self._probe_misses += 1
            if self._probe_misses >= PROBE_MISSES_TO_GIVE_UP:
                self.pli_state = "ignored"
                self._ignored_at = now
                self._probe_misses = 0
        elif self._pli_purpose == "gating":
            # Not answered this time: decode the chain again until probes say otherwise.
            self.pli_state = "unknown"
            self._probe_answers = 0


def is_key_frame(mime_type: str, data: bytes) -> bool | None:
    """Whether an encoded frame is a key frame (None: this codec is not understood)."""
    if not data:
        return False
    if mime_type == "video/vp8":
        return not data[0] & 0x01  # frame tag, bit 0: 0 = key frame (RFC 6386 9.1)
    if mime_type == "video/h264":
        start = 0
        while True:
            start = data.find(b"\x00\x00\x01", start)
            if start < 0 or start + 3 >= len(data):
                return False
            if data[start + 3] & 0x1F == 5:  # IDR slice
                return True
            start += 3
    return None


_DECODERS = {"video/vp8": "vp8", "video/h264": "h264"}


class VideoDecoder:
    """Encoded camera frames (aiortc's reassembled ``(codec, data)``) -> the sampler.

    ``due()`` and ``interval()`` come from the sampler; ``deliver`` takes a decoded
    frame; ``request_key_frame`` sends a PLI; ``lean()`` says whether this call sheds
    camera work (then key frames only, see :meth:`DecodeGate.on_frame`); ``light()``
    whether inter frames are decoded without the loop filter (checked at key frames).
    Codecs the gate does not understand are decoded frame by frame with aiortc's own
    decoder.
    """

    def __init__(
        self,
        *,
        due: Callable[[], float],
        interval: Callable[[], float],
        deliver: Callable[[av.VideoFrame], None],
        request_key_frame: Callable[[], None],
        lean: Callable[[], bool] = lambda: False,
        light: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gate = DecodeGate()
        self._lean = lean
        self._light = light
        self.decoding_light = False
        """The open decoder skips the loop filter on inter frames."""
        self._due = due
        self._interval = interval
        self._deliver = deliver
        self._request_key_frame = request_key_frame
        self._clock = clock
        self._codec_name: str | None = None
        self._codec: Any = None
        self._fallback: Any = None

    def __call__(self, codec: Any, data: bytes, timestamp: int) -> None:
        mime = str(codec.mimeType).lower()
        key = is_key_frame(mime, data) if mime in _DECODERS else None
        now = self._clock()
        due = self._due()
        if key is None:  # decode every frame, as aiortc would
            if due != NEVER:
                self._decode_other(codec, data, timestamp)
            return
        interval = self._interval()
        media_time = timestamp / codec.clockRate if codec.clockRate else None
        decode, send_pli = self.gate.on_frame(
            now, key, due, interval, self._lean(), media_time=media_time
        )
        if send_pli:
            self._request_key_frame()
        if not decode:
            return
        if key:
            self._open_for_key_frame(mime, now)
        frame = self._decode(mime, data, timestamp)
        if frame is not None:
            self._deliver(frame)

    def sampled(self) -> None:
        """The sampler took a frame (it may be time to learn whether PLIs work)."""
        if self.gate.after_sample(self._clock(), self._interval()):
            self._request_key_frame()

    def _open_for_key_frame(self, mime: str, now: float) -> None:
        """Nothing before a key frame is needed: open the decoder light or in full, as
        the process asks (light only for VP8 senders that send key frames of their own
        often: a sender keyed by our PLIs may stop answering, and its chain grow long)."""
        light = mime == "video/vp8" and self._light() and self.gate.keys_of_its_own_often(now)
        if self._codec_name != mime or light != self.decoding_light:
            self._open(mime, light=light)

    def _decode(self, mime: str, data: bytes, timestamp: int) -> av.VideoFrame | None:
        if self._codec_name != mime:
            self._open(mime, light=False)
        packet = av.Packet(data)
        packet.pts = timestamp
        try:
            frames = self._codec.decode(packet)
        except av.FFmpegError as exc:
            self.gate.decode_failed()
            log.debug("camera frame did not decode: %s", exc)
            self._request_key_frame()
            return None
        last = frames[-1] if frames else None
        return last if isinstance(last, av.VideoFrame) else None

    def _open(self, mime: str, *, light: bool) -> None:
        """A fresh decoder (its first frame is a key frame, or nothing decodes)."""
        self._codec = av.CodecContext.create(_DECODERS[mime], "r")
        self._codec.thread_count = 1  # on the event loop: no threads, no frame delay
        if light:
            self._codec.options = {"skip_loop_filter": "nokey"}
        self._codec_name = mime
        self.decoding_light = light

    def _decode_other(self, codec: Any, data: bytes, timestamp: int) -> None:
        from aiortc.codecs import get_decoder
        from aiortc.jitterbuffer import JitterFrame

        if self._fallback is None or self._codec_name != codec.mimeType:
            self._fallback = get_decoder(codec)
            self._codec_name = codec.mimeType
        try:
            frames = self._fallback.decode(JitterFrame(data, timestamp))
        except (av.FFmpegError, ValueError):
            self.gate.stats.decode_errors += 1
            self._request_key_frame()
            return
        self.gate.stats.decoded += 1
        for frame in frames:
            if isinstance(frame, av.VideoFrame):
                self._deliver(frame)
