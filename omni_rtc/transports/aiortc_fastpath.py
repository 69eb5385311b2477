"""Cheaper media paths through aiortc: every reach into its private internals, guarded.

aiortc 1.16 decodes every received frame in a thread per receiver and encodes every
sent audio frame in the default executor, after resampling it to 48 kHz stereo.  On a
busy core the thread hand-offs (queue, condition, loop wake-ups, the GIL) cost more
than the codecs.  The functions here let a call do that work on the event loop instead,
and only the work it needs:

- :func:`take_encoded_frames`: a receiver hands its reassembled encoded frames (Opus,
  VP8, ...) to a callback on the loop instead of to its decoder thread; the call decodes
  Opus straight at the model's rate and only the camera frames it samples.
- :func:`request_key_frame`: the next video packet makes the receiver send a PLI, the
  same way it does after a decoding error.
- :func:`on_send_codec`: learn the codec a sender will use before it starts, so the
  reply can be handed over as Opus packets, which aiortc only packetizes.
- :func:`low_latency_audio`: each caller audio packet (a whole Opus frame) is handed on
  as it arrives, in order, instead of after the next one (aiortc's jitter buffer).
- :func:`throttle_remb`: a video receiver sends its bandwidth estimate (REMB) the way
  libwebrtc does, not with every packet while its estimator sees overuse; the estimate
  is computed as aiortc does, with the same figures, in less Python per packet.
- :func:`install` also gives ``aiortc.clock`` integer versions of ``current_ms`` and
  ``current_ntp_time`` (called for every packet; the same time, without datetimes).

:func:`install` (called by ``Bridge``) checks aiortc's layout once; when it changed it
logs a warning, every function returns False, and calls use aiortc's own paths (same
behaviour, more CPU).  ``tests/unit/test_aiortc_fastpath.py`` drives real receivers and
senders through these paths and fails when aiortc changes.
"""

from __future__ import annotations

import asyncio
import bisect
import inspect
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import aiortc
from aiortc import clock, rtcrtpreceiver, rtcrtpsender
from aiortc.codecs.opus import OpusEncoder as AiortcOpusEncoder
from aiortc.jitterbuffer import MAX_MISORDER, JitterBuffer, JitterFrame
from aiortc.rate import (
    MIN_FRAME_PERIOD_HISTORY_LENGTH,
    OveruseEstimator,
    RateCounter,
    RemoteBitrateEstimator,
)
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.utils import uint16_add, uint16_gt

log = logging.getLogger("omni_rtc.webrtc")

EncodedFrameHandler = Callable[[RTCRtpCodecParameters, bytes, int], None]
"""``(codec, frame bytes, RTP timestamp)``, called on the event loop."""

_RECEIVER = "_RTCRtpReceiver__"
_NEEDS: dict[Callable[..., Any], tuple[str, ...]] = {
    rtcrtpreceiver.RTCRtpReceiver.__init__: (
        _RECEIVER + "decoder_queue",
        _RECEIVER + "decoder_error",
        _RECEIVER + "decoder_thread",
        _RECEIVER + "jitter_buffer",
        _RECEIVER + "remote_bitrate_estimator",
    ),
    rtcrtpreceiver.RTCRtpReceiver.receive: (
        "decoder_worker",
        _RECEIVER + "decoder_queue",
        _RECEIVER + "decoder_thread",
        "_queue",
    ),
    rtcrtpreceiver.RTCRtpReceiver._handle_rtp_packet: (
        _RECEIVER + "decoder_queue",
        _RECEIVER + "decoder_error",
        _RECEIVER + "decoder_thread",
        _RECEIVER + "jitter_buffer",
        _RECEIVER + "remote_bitrate_estimator",
        "_send_rtcp_pli",
        "put",
        "add",
        "_data",
    ),
    rtcrtpsender.RTCRtpSender._next_encoded_frame: ("pack", "Frame"),
}
_LIGHTEN_NEEDS: dict[Callable[..., Any], tuple[str, ...]] = {
    RemoteBitrateEstimator.__init__: ("incoming_bitrate", "estimator"),
    RemoteBitrateEstimator.add: ("incoming_bitrate", "rate", "add", "reset"),
    RateCounter.__init__: ("_origin_ms", "_window_size", "_scale"),
    OveruseEstimator.update: ("update_min_frame_period",),
    OveruseEstimator.update_min_frame_period: ("ts_delta_hist",),
}
"""What :func:`lighten` relies on; if aiortc changed it, the estimator is left as is."""
_WORKER_PARAMETERS = ["loop", "input_q", "output_q", "decode_error"]
_REMB_ADD_PARAMETERS = ["self", "arrival_time_ms", "abs_send_time", "payload_size", "ssrc"]

_state: bool | None = None


def install() -> bool:
    """Check aiortc's layout and route inline receivers past their threads (idempotent).

    False, with one warning, when aiortc changed: calls then use aiortc's own paths.
    """
    global _state
    if _state is not None:
        return _state
    problems = _layout_problems()
    if problems:
        log.warning(
            "aiortc %s changed (%s): media uses aiortc's own threads (more CPU per call)",
            _aiortc_version(),
            "; ".join(problems),
        )
        _state = False
        return False
    original = rtcrtpreceiver.decoder_worker

    def decoder_worker(
        loop: asyncio.AbstractEventLoop,
        input_q: Any,
        output_q: asyncio.Queue[Any],
        decode_error: threading.Event,
    ) -> None:
        if isinstance(input_q, _InlineFrames):
            return  # frames are handed over on the event loop; nothing to do here
        original(loop, input_q, output_q, decode_error)

    decoder_worker.__wrapped__ = original  # type: ignore[attr-defined]
    rtcrtpreceiver.decoder_worker = decoder_worker
    clock.current_ms = current_ms
    clock.current_ntp_time = current_ntp_time
    _state = True
    return True


def _aiortc_version() -> str:
    import aiortc

    return str(getattr(aiortc, "__version__", "?"))


def _missing_names(needs: dict[Callable[..., Any], tuple[str, ...]]) -> list[str]:
    problems = []
    for function, names in needs.items():
        code = getattr(function, "__code__", None)
        have = set(code.co_names) if code is not None else set()
        missing = [name for name in names if name not in have]
        if missing:
            problems.append(f"{function.__qualname__} no longer uses {', '.join(missing)}")
    return problems


TESTED_AIORTC = "1.16."
"""The aiortc release line whose private handlers the stand-ins were checked against."""


def checked_layout(
    needs: dict[Callable[..., Any], tuple[str, ...]],
    instead: str,
    *,
    more: list[str] | None = None,
    tested_release: bool = False,
) -> list[str]:
    """What changed in aiortc/aioice that a stand-in relies on (``needs``, ``more``, and
    with ``tested_release`` a release other than :data:`TESTED_AIORTC`), logged once
    with what happens ``instead``; callers cache the answer."""
    problems = _missing_names(needs) + (more or [])
    if tested_release and not aiortc.__version__.startswith(TESTED_AIORTC):
        problems.append(f"aiortc {aiortc.__version__}, checked against {TESTED_AIORTC}x")
    if problems:
        log.warning("aiortc/aioice changed (%s): %s", "; ".join(problems), instead)
    return problems


def _layout_problems() -> list[str]:
    problems = _missing_names(_NEEDS)
    worker = getattr(rtcrtpreceiver, "decoder_worker", None)
    original = getattr(worker, "__wrapped__", worker)
    if not callable(original) or list(inspect.signature(original).parameters) != (
        _WORKER_PARAMETERS
    ):
        problems.append("decoder_worker(loop, input_q, output_q, decode_error) changed")
    if not callable(getattr(AiortcOpusEncoder, "pack", None)):
        problems.append("OpusEncoder.pack is gone")
    if not inspect.iscoroutinefunction(rtcrtpsender.RTCRtpSender.send):
        problems.append("RTCRtpSender.send is not a coroutine")
    if not callable(getattr(rtcrtpreceiver.RTCRtpReceiver, "_send_rtcp_pli", None)):
        problems.append("RTCRtpReceiver._send_rtcp_pli is gone")
    if list(inspect.signature(RemoteBitrateEstimator.add).parameters) != _REMB_ADD_PARAMETERS:
        problems.append("RemoteBitrateEstimator.add(...) changed")
    for name in ("current_ms", "current_ntp_time"):
        if not callable(getattr(clock, name, None)):
            problems.append(f"aiortc.clock.{name} is gone")
    return problems


NTP_EPOCH_OFFSET_US = 2_208_988_800 * 1_000_000
"""From 1900-01-01 (NTP's epoch, aiortc's clock) to 1970-01-01 (the system clock's)."""


def ms_since_1900(time_ns: int) -> int:
    """aiortc's ``current_ms`` for a system-clock reading (whole microseconds, as a
    datetime holds it, then whole milliseconds)."""
    return (time_ns // 1000 + NTP_EPOCH_OFFSET_US) // 1000


def ntp_timestamp(time_ns: int) -> int:
    """aiortc's ``current_ntp_time`` for a system-clock reading: 32.32 fixed point,
    the fraction from whole microseconds."""
    seconds, micros = divmod(time_ns // 1000 + NTP_EPOCH_OFFSET_US, 1_000_000)
    return (seconds << 32) | ((micros << 32) // 1_000_000)


def current_ms() -> int:
    """Stands in for ``aiortc.clock.current_ms`` (called for every packet received)."""
    return ms_since_1900(time.time_ns())


def current_ntp_time() -> int:
    """Stands in for ``aiortc.clock.current_ntp_time`` (called for every packet sent)."""
    return ntp_timestamp(time.time_ns())


class _InlineFrames:
    """Stands in for a receiver's decoder queue: ``put`` runs on the event loop."""

    def __init__(
        self,
        on_frame: EncodedFrameHandler,
        on_end: Callable[[], None],
        track_queue: asyncio.Queue[Any],
        decode_error: threading.Event,
        kind: str,
    ) -> None:
        self.on_frame = on_frame
        self.on_end = on_end
        self.track_queue = track_queue
        self.decode_error = decode_error
        self.kind = kind
        self.ended = False
        self.failures = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if self.ended:
            return
        if item is None:  # the receiver stopped: end its track, as its thread would
            self.ended = True
            self.track_queue.put_nowait(None)
            self._call(self.on_end)
            return
        codec, encoded = item
        if self.kind == "video":
            asyncio.get_running_loop().call_soon(self._hand_over, codec, encoded)
            return
        self._hand_over(codec, encoded)

    def _hand_over(self, codec: Any, encoded: Any) -> None:
        if self.ended:
            return
        try:
            self.on_frame(codec, encoded.data, encoded.timestamp)
        except Exception:
            # Never let a frame end aiortc's receive loop; video asks for a key frame.
            self.failures += 1
            if self.failures == 1:
                log.exception("%s frame handler failed (later failures are counted)", self.kind)
            self.decode_error.set()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        raise queue.Empty  # never read: the worker thread returns at once

    @staticmethod
    def _call(callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            log.exception("end-of-track handler failed")


def take_encoded_frames(
    receiver: Any, on_frame: EncodedFrameHandler, on_end: Callable[[], None]
) -> bool:
    """Hand ``receiver``'s encoded frames to ``on_frame`` (on the loop), not its thread.

    Call before the receiver starts (before the connection is up).  ``on_end`` runs when
    it stops; its track then ends as usual.  False (and nothing changed) if the receiver
    already started or aiortc's layout changed: read ``receiver.track`` then.
    """
    if not install():
        return False
    attrs = vars(receiver)
    current = attrs.get(_RECEIVER + "decoder_queue")
    error = attrs.get(_RECEIVER + "decoder_error")
    track_queue = getattr(receiver.track, "_queue", None)
    if (
        attrs.get(_RECEIVER + "decoder_thread") is not None
        or type(current) is not queue.Queue
        or not current.empty()
        or not isinstance(error, threading.Event)
        or not isinstance(track_queue, asyncio.Queue)
    ):
        log.debug("receiver already started or unfamiliar: aiortc decodes its frames")
        return False
    kind = str(getattr(receiver.track, "kind", "media"))
    inline = _InlineFrames(on_frame, on_end, track_queue, error, kind)
    setattr(receiver, _RECEIVER + "decoder_queue", inline)
    return True


def request_key_frame(receiver: Any) -> bool:
    """Make a video receiver send a PLI with its next packet (as after a decode error)."""
    error = vars(receiver).get(_RECEIVER + "decoder_error")
    if not _state or not isinstance(error, threading.Event):
        return False
    error.set()
    return True


def on_send_codec(sender: Any, callback: Callable[[RTCRtpCodecParameters], None]) -> bool:
    """Call ``callback(codec)`` with the codec ``sender`` will use, just before it starts
    (its first call to the track's ``recv``), so the track can be replaced to match."""
    if not install():
        return False
    original: Callable[[Any], Coroutine[Any, Any, None]] = sender.send

    async def send(parameters: Any) -> None:
        codecs = getattr(parameters, "codecs", None)
        if codecs:
            try:
                callback(codecs[0])
            except Exception:
                log.exception("send-codec callback failed; aiortc encodes as usual")
        await original(parameters)

    sender.send = send
    return True


def low_latency_audio(receiver: Any) -> bool:
    """Hand each caller audio packet on as it arrives (~20 ms less uplink delay than
    aiortc's buffer at its smallest, ~80 ms less than its default).

    aiortc's audio jitter buffer holds frames for playout smoothing and releases one
    when the next arrives; the model is not a speaker and needs no smoothing, only
    order, and an audio packet is a whole frame.
    """
    return _stand_in(
        receiver, "jitter_buffer", JitterBuffer, lambda buffer: InOrderAudio(buffer.capacity)
    )


_Part = TypeVar("_Part")


def _stand_in(
    receiver: Any, part: str, expected: type[_Part], make: Callable[[_Part], object]
) -> bool:
    """Replace a receiver's private ``part`` (an ``expected``) with ``make(part)``; False,
    and nothing changed, when aiortc's layout is not the one checked by :func:`install`."""
    attribute = _RECEIVER + part
    current = vars(receiver).get(attribute)
    if not install():
        return False
    if not isinstance(current, expected):
        log.debug("aiortc receiver has no %s %s; keeping its own", expected.__name__, part)
        return False
    setattr(receiver, attribute, make(current))
    return True


class InOrderAudio:
    """Stands in for an audio receiver's JitterBuffer: every packet out at once, in order.

    A packet older than one already handed on (reordered, or repeated) is dropped: it
    is too late to matter.  A sequence number far behind means the stream restarted.
    """

    def __init__(self, capacity: int = 16) -> None:
        self.capacity = capacity
        self._last: int | None = None
        self.late = 0

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        last = self._last
        if last is not None and not uint16_gt(seq, last) and uint16_add(last, -seq) < MAX_MISORDER:
            self.late += 1
            return False, None
        self._last = seq
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)


REMB_MIN_INTERVAL_MS = 200
"""libwebrtc's ``kRembSendIntervalMs``: no more than five estimates a second..."""
REMB_DROP_RATIO = 0.97
"""...unless the estimate fell below 97% of the last one sent (``kSendThresholdPercent``)."""


def throttle_remb(receiver: Any) -> bool:
    """Send a video receiver's REMB at most every 200 ms unless the estimate drops by 3%.

    aiortc's estimator asks for a REMB with every packet while it detects overuse; on a
    busy core (packets wait for the loop, so their delay grows) that is dozens of RTCP
    packets a second per call, each protected and sent, which makes the core busier
    still.  The estimate itself is unchanged; the sender hears it as libwebrtc would.
    """
    return _stand_in(receiver, "remote_bitrate_estimator", RemoteBitrateEstimator, ThrottledRemb)


class ThrottledRemb:
    """Stands in for a receiver's RemoteBitrateEstimator: same estimate, fewer reports."""

    def __init__(self, estimator: RemoteBitrateEstimator) -> None:
        self.estimator = lighten(estimator)
        self._last_sent_ms: int | None = None
        self._last_sent_bitrate = 0
        self.sent = 0
        self.held = 0

    def add(
        self, arrival_time_ms: int, abs_send_time: int, payload_size: int, ssrc: int
    ) -> tuple[int, list[int]] | None:
        remb = self.estimator.add(
            arrival_time_ms=arrival_time_ms,
            abs_send_time=abs_send_time,
            payload_size=payload_size,
            ssrc=ssrc,
        )
        if remb is None:
            return None
        bitrate = remb[0]
        last = self._last_sent_ms
        if (
            last is not None
            and 0 <= arrival_time_ms - last < REMB_MIN_INTERVAL_MS  # (a clock step back: send)
            and bitrate >= self._last_sent_bitrate * REMB_DROP_RATIO
        ):
            self.held += 1
            return None
        self._last_sent_ms = arrival_time_ms
        self._last_sent_bitrate = bitrate
        self.sent += 1
        return remb


def lighten(estimator: RemoteBitrateEstimator) -> RemoteBitrateEstimator:
    """The same estimator with less Python per packet, and the same figures: its incoming
    bitrate no longer steps through every millisecond since the last packet, and its
    minimum frame period is a ``min`` over the history, not a loop of ``min`` calls.
    Left as it is if aiortc's estimator changed."""
    if _missing_names(_LIGHTEN_NEEDS):
        return estimator
    incoming = getattr(estimator, "incoming_bitrate", None)
    if isinstance(incoming, RateCounter) and incoming._origin_ms is None:
        estimator.incoming_bitrate = WindowRate(incoming._window_size, incoming._scale)  # type: ignore[assignment]
    overuse = getattr(estimator, "estimator", None)
    if isinstance(overuse, OveruseEstimator) and not overuse.ts_delta_hist:
        overuse.update_min_frame_period = MinFramePeriod()  # type: ignore[method-assign]
    return estimator


class WindowRate:
    """aiortc's ``RateCounter`` (the amount received over the last ``window_ms``, as a
    rate) with the packets kept in time order instead of a bucket per millisecond, so a
    packet costs the same however long since the one before.  The same figures, a wall
    clock stepped back included, unless a packet is older than the window's start (the
    ring then files it in a bucket of the future; here it leaves at the next step)."""

    def __init__(self, window_ms: int, scale: int = 8000) -> None:
        self._window_ms = window_ms
        self._scale = scale
        self.reset()

    def reset(self) -> None:
        self._packets: deque[tuple[int, int]] = deque()
        self._origin_ms: int | None = None
        self._total = 0

    def add(self, value: int, now_ms: int) -> None:
        if self._origin_ms is None:
            self._origin_ms = now_ms
        else:
            self._erase_old(now_ms)
        packets = self._packets
        if packets and now_ms < packets[-1][0]:
            bisect.insort(packets, (now_ms, value))  # the wall clock stepped back
        else:
            packets.append((now_ms, value))
        self._total += value

    def rate(self, now_ms: int) -> int | None:
        if self._origin_ms is None:
            return None
        self._erase_old(now_ms)
        active_window_ms = now_ms - self._origin_ms + 1
        if self._packets and active_window_ms > 1:
            return round(self._scale * self._total / active_window_ms)
        return None

    def _erase_old(self, now_ms: int) -> None:
        assert self._origin_ms is not None
        new_origin_ms = now_ms - self._window_ms + 1
        if self._origin_ms >= new_origin_ms:
            return
        self._origin_ms = new_origin_ms
        packets = self._packets
        while packets and packets[0][0] < new_origin_ms:
            self._total -= packets.popleft()[1]


class MinFramePeriod:
    """``OveruseEstimator.update_min_frame_period``: the smallest of the last
    ``MIN_FRAME_PERIOD_HISTORY_LENGTH`` timestamp deltas, this one included."""

    def __init__(self) -> None:
        self.history: deque[float] = deque(maxlen=MIN_FRAME_PERIOD_HISTORY_LENGTH)

    def __call__(self, ts_delta: float) -> float:
        self.history.append(ts_delta)
        return min(self.history)
