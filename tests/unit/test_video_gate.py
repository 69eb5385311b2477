"""Decode only the camera frames the 2 fps sampler takes: simulated senders, real VP8."""

from __future__ import annotations

import asyncio
import fractions
import math
import random
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import pytest
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from omni_rtc.media.video_gate import NEVER, DecodeGate, VideoDecoder, is_key_frame

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)


@dataclass
class Sender:
    """A camera: ``fps`` frames a second, a key frame every ``key_every`` frames (0: only
    the first), answering PLIs after ``pli_latency`` unless ``honours_pli`` is False."""

    fps: float = 30.0
    key_every: int = 30
    honours_pli: bool = False
    pli_latency: float = 0.05
    min_pli_gap: float = 0.0
    pending_key_at: float | None = None
    last_pli_answered: float = -math.inf

    def pli(self, now: float) -> None:
        if self.honours_pli and now - self.last_pli_answered >= self.min_pli_gap:
            self.last_pli_answered = now
            self.pending_key_at = now + self.pli_latency

    def is_key(self, index: int, now: float) -> bool:
        if self.pending_key_at is not None and now >= self.pending_key_at:
            self.pending_key_at = None
            return True
        return index == 0 or (self.key_every > 0 and index % self.key_every == 0)


@dataclass
class Run:
    images: list[float] = field(default_factory=list)
    decoded_at: list[float] = field(default_factory=list)
    decoded: int = 0
    frames: int = 0
    gate: DecodeGate = field(default_factory=DecodeGate)

    @property
    def images_per_s(self) -> float:
        return (
            len(self.images)
            / (self.images[-1] - self.images[0])
            * (len(self.images) - 1)
            / len(self.images)
        )

    def images_between(self, start: float, end: float) -> int:
        return sum(start <= at < end for at in self.images)

    def decoded_between(self, start: float, end: float) -> int:
        return sum(start <= at < end for at in self.decoded_at)


def simulate(
    sender: Sender,
    seconds: float = 30.0,
    interval: float = 0.5,
    audio_from: float = 0.0,
    lean: Callable[[float], bool] = lambda now: False,
    late: Callable[[int], float] = lambda index: 0.0,
    media_clock: bool = False,
    lost: Callable[[int], bool] = lambda index: False,
) -> Run:
    """A sampler like FrameSampler: sleeps until ``due``, then takes the newest decoded
    frame (or the next one decoded, if none is waiting).  ``lean(now)``: the process
    is overloaded; ``late(index)``: how late frame ``index`` arrives (in order);
    ``media_clock``: frames carry their capture time (RTP timestamp), as from WebRTC;
    ``lost(index)``: frame ``index`` never arrives."""
    run = Run()
    due = -math.inf
    fresh_at: float | None = None
    arrived = -math.inf

    def take(at: float) -> None:
        nonlocal due, fresh_at
        run.images.append(at)
        due = at + interval
        fresh_at = None
        if run.gate.after_sample(at, interval):
            sender.pli(at)

    for i in range(int(seconds * sender.fps)):
        captured = i / sender.fps
        if lost(i):
            continue
        now = arrived = max(arrived, captured + late(i))
        if fresh_at is not None and due <= now and now >= audio_from:
            take(max(due, fresh_at, audio_from))  # woke at due with a frame waiting
        key = sender.is_key(i, now)
        can_send = now >= audio_from
        decode, pli = run.gate.on_frame(
            now,
            key,
            due if can_send else NEVER,
            interval,
            lean(now),
            media_time=captured if media_clock else None,
        )
        if pli:
            sender.pli(now)
        run.frames += 1
        if decode:
            run.decoded += 1
            run.decoded_at.append(now)
            fresh_at = now
            if can_send and now >= due:
                take(now)
    return run


def test_periodic_key_frames_ignoring_pli_still_give_two_images_a_second() -> None:
    # the benchmark's client: pre-encoded VP8, 30 fps, a key frame every 30, no PLI
    run = simulate(Sender(fps=30, key_every=30))
    assert 1.9 <= run.images_per_s <= 2.001
    assert np.diff(run.images).min() >= 0.49  # never faster than 2 fps
    assert run.decoded / run.frames < 0.65  # key frame .. second image, not the rest
    # a key frame every second: PLIs would not pay, and a probe could pass for answered
    assert run.gate.pli_state == "unknown"
    assert run.gate.stats.plis == 0


def test_a_sender_that_answers_plis_sends_key_frames_just_in_time() -> None:
    # aiortc's encoder (answers every PLI), 30 fps, key frames only on request
    run = simulate(Sender(fps=30, key_every=0, honours_pli=True, pli_latency=0.05))
    assert 1.9 <= run.images_per_s <= 2.001
    assert run.decoded / run.frames < 0.3  # all frames for the first 5 s (learning)
    assert run.gate.pli_state == "honoured"
    assert run.gate.stats.plis_answered >= 50


def test_chromium_rate_limit_on_plis_is_respected() -> None:
    sender = Sender(fps=30, key_every=0, honours_pli=True, pli_latency=0.08, min_pli_gap=0.3)
    run = simulate(sender)
    assert 1.9 <= run.images_per_s <= 2.001
    assert run.gate.stats.plis_answered >= 50  # never asked within Chromium's 300 ms


def test_a_slow_periodic_sender_is_not_taken_for_one_that_answers() -> None:
    # GStreamer's vp8enc: a key frame every 128 frames, whether asked or not
    for fps, key_every in ((30, 128), (15, 45), (30, 75)):
        run = simulate(Sender(fps=fps, key_every=key_every), seconds=60)
        assert run.gate.pli_state != "honoured", (fps, key_every)
        assert 1.9 <= run.images_per_s <= 2.001


@pytest.mark.parametrize("media_clock", [False, True])
@pytest.mark.parametrize("key_every", [60, 66, 70])
def test_a_sender_with_a_two_second_period_is_not_taken_for_one_that_answers(
    key_every: int, media_clock: bool
) -> None:
    # probes go out after 2 s without a key frame: such a sender's own key frame came
    # right after each, passed for an answer and reset its period (1.5-1.7 images/s);
    # no probe now goes out when the last interval, repeated, would bring one meanwhile
    run = simulate(Sender(fps=30, key_every=key_every), seconds=60, media_clock=media_clock)
    assert run.gate.pli_state != "honoured"
    assert run.gate.stats.plis_answered <= 1  # the first one, before any interval is known
    assert run.images_per_s >= 1.95


def test_a_sender_that_answers_plis_is_still_learnt_on_the_media_clock() -> None:
    sender = Sender(fps=30, key_every=0, honours_pli=True, pli_latency=0.05)
    run = simulate(sender, media_clock=True)
    assert run.gate.pli_state == "honoured"
    assert run.decoded / run.frames < 0.3
    assert 1.9 <= run.images_per_s <= 2.001


def test_few_frames_per_image_are_all_decoded_without_asking_for_key_frames() -> None:
    # the page's camera: 5 fps; a PLI would cost a key frame to save one inter frame
    run = simulate(Sender(fps=5, key_every=0, honours_pli=True))
    assert run.decoded == run.frames
    assert run.gate.stats.plis == 0


def test_a_sender_without_key_frames_or_plis_is_decoded_in_full() -> None:
    run = simulate(Sender(fps=30, key_every=0, honours_pli=False))
    assert run.decoded == run.frames
    assert 1.9 <= run.images_per_s <= 2.001


def test_nothing_is_decoded_before_audio_then_a_key_frame_is_asked_for() -> None:
    sender = Sender(fps=30, key_every=0, honours_pli=True, pli_latency=0.05)
    run = simulate(sender, seconds=6, audio_from=3.0)
    assert run.gate.stats.decoded > 0
    assert run.images[0] <= 3.2  # first image soon after the first audio
    # frames before the audio were skipped (the first frame only arrives at 0)
    assert run.gate.stats.skipped >= 3.0 * 30 - 2


def during(start: float, end: float) -> Callable[[float], bool]:
    return lambda now: start <= now < end


def test_lean_decodes_only_the_key_frames_of_a_periodic_sender() -> None:
    # the benchmark's client again, with the process overloaded from 10 s to 20 s
    run = simulate(Sender(fps=30, key_every=30), seconds=30, lean=during(10, 20))
    assert run.decoded_between(11, 20) == 9  # its key frames, nothing else
    assert run.images_between(11, 20) == 9  # an image a second, each a key frame
    assert all(at == round(at) for at in run.images if 11 <= at < 20)  # key frames' times
    assert 14 <= run.decoded_between(3, 4) <= 20  # before: key frame .. second image
    assert run.images_between(3, 10) == 14
    assert run.images_between(22, 30) == 16  # all images again once it has time
    assert 14 <= run.decoded_between(25, 26) <= 20
    assert run.gate.stats.plis == 0  # its own key frames will do: nothing asked
    assert np.diff(run.images).min() >= 0.49


def test_lean_asks_a_sender_that_answers_plis_as_before() -> None:
    sender = Sender(fps=30, key_every=0, honours_pli=True, pli_latency=0.05)
    run = simulate(sender, seconds=30, lean=during(10, 20))
    assert run.images_between(11, 20) >= 17  # key frames on request: 2 images a second
    assert run.decoded_between(11, 20) <= 2 * run.images_between(11, 20)


@pytest.mark.parametrize(
    "sender",
    [
        Sender(fps=30, key_every=0, honours_pli=False),  # no key frames, PLIs ignored
        Sender(fps=30, key_every=90),  # a key frame every 3 s: too rare to go lean
        Sender(fps=5, key_every=0, honours_pli=True),  # the page: never asked (5 fps)
    ],
)
def test_lean_keeps_decoding_senders_whose_key_frames_are_rare(sender: Sender) -> None:
    lean = simulate(sender, seconds=30, lean=during(10, 20))
    full = simulate(Sender(sender.fps, sender.key_every, sender.honours_pli), seconds=30)
    assert lean.images_between(11, 20) == full.images_between(11, 20) >= 17
    assert lean.decoded == full.decoded


def busy_loop_lateness(seed: int = 7) -> Callable[[int], float]:
    """Key frames (several packets) up to 150 ms late, inter frames up to 20 ms."""
    rng = np.random.default_rng(seed)
    key_late, inter_late = rng.uniform(0, 0.15, 3000), rng.uniform(0, 0.02, 3000)
    return lambda index: float(key_late[index] if index % 30 == 0 else inter_late[index])


def test_late_key_frames_keep_their_period_on_the_media_clock() -> None:
    # a key frame every second, arriving 0-150 ms late: on arrival times two intervals
    # in a row often differ by more than 10%, the period breaks and the whole second is
    # decoded; their RTP timestamps say 1.000 s every time
    by_arrival = simulate(Sender(), seconds=60, late=busy_loop_lateness())
    by_media = simulate(Sender(), seconds=60, late=busy_loop_lateness(), media_clock=True)
    per_second = [by_media.decoded_between(s + 0.5, s + 1.5) for s in range(3, 59)]
    assert max(per_second) <= 21  # key frame .. second image, every second
    assert max(by_arrival.decoded_between(s + 0.5, s + 1.5) for s in range(3, 59)) == 30
    assert by_media.images_per_s >= 1.9
    assert np.diff(by_media.images).min() >= 0.49
    assert by_media.gate.stats.plis == 0


def test_the_next_key_frame_is_expected_on_time_after_a_late_one() -> None:
    # a key frame a second at 30 fps; the one at 3 s comes 150 ms late (a stall; the
    # frames after it in a burst behind it): the next is expected where on-time frames
    # land, at 4.0 s, not 1 s after that late arrival
    gate = DecodeGate()
    arrived = 0.0
    for index in range(106):
        captured = index / 30
        arrived = max(arrived + 0.001, captured + (0.15 if index == 90 else 0.0))
        gate.on_frame(arrived, index % 30 == 0, NEVER, 0.5, media_time=captured)
    assert gate.natural_key_at(3.55) == pytest.approx(4.0, abs=0.01)


@pytest.mark.parametrize("fps", [15, 20, 25, 30])
def test_after_a_lost_key_frame_no_image_waits_for_the_next_for_ten_seconds(fps: int) -> None:
    # a key frame a second; those at 10 s and 14 s never arrive (lost, or a starved
    # sender dropped them): the first loss costs the images until 11 s (nothing to
    # decode from), then the chains are decoded in full for 10 s (the recovery PLIs sent
    # meanwhile do not claim the next key frame): the second loss costs no image
    lost = (10 * fps, 14 * fps)
    run = simulate(
        Sender(fps=fps, key_every=fps), seconds=40, media_clock=True, lost=lambda i: i in lost
    )
    after_first = [at for at in run.images if 11 <= at < 22]
    assert len(after_first) == 22
    assert np.diff(after_first).max() <= 0.51
    assert run.gate.stats.plis_answered == 0
    # trusted again 10 s after the second loss: key frame .. second image
    assert run.decoded_between(30, 39) <= 9 * (fps // 2 + 2)


def test_a_late_periodic_key_frame_is_not_taken_for_an_answer_to_a_pli() -> None:
    gate = DecodeGate()
    for index in range(89):  # 30 fps on time, a key frame a second: a steady period
        at = index / 30
        gate.on_frame(at, index % 30 == 0, math.floor(at * 2 + 1) / 2, 0.5, media_time=at)
    # the loop stalls: the frame before the key frame comes 180 ms late, the image due
    # at 3.0 waits for the key frame, which is overdue: ask for one...
    decode, pli = gate.on_frame(3.147, False, 3.0, 0.5, media_time=88 / 30)
    assert (decode, pli) == (False, True)
    gate.on_frame(3.2, True, 3.0, 0.5, media_time=3.0)  # ...it comes, on its schedule
    assert gate.stats.plis_answered == 0  # not an answer: the sender is not "honoured"
    assert gate.natural_key_at(3.3) == pytest.approx(4.0, abs=0.02)  # period kept


@pytest.mark.parametrize(
    "jump",
    [-52.0, 2**32 / 90000],  # a timestamp base set back; aiortc's unwrapping, mistaken
)
def test_a_restarted_sender_makes_no_period_from_its_media_clock(jump: float) -> None:
    gate = DecodeGate()
    for second in range(6):
        media = second + (jump if second >= 3 else 0.0)
        gate.on_frame(float(second), True, -math.inf, 0.5, media_time=media)
        if second == 2:
            assert gate.natural_key_at(2.1) == pytest.approx(3.0, abs=0.01)
        if second == 3:
            assert not gate.keys_of_its_own_often(3.1)  # no interval across the jump
        if second == 4:
            assert gate.natural_key_at(4.1) == NEVER  # one interval since: not yet
    assert gate.natural_key_at(5.1) == pytest.approx(6.0, abs=0.01)  # no distrust either


def test_a_repeated_key_frame_changes_nothing() -> None:
    gate = DecodeGate()
    for second in range(3):
        gate.on_frame(float(second), True, -math.inf, 0.5, media_time=float(second))
    gate.on_frame(2.05, True, -math.inf, 0.5, media_time=2.0)  # the same frame again
    assert gate.natural_key_at(2.1) == pytest.approx(3.0, abs=0.01)
    assert gate.keys_of_its_own_often(2.1)


def test_irregular_key_frames_do_not_make_a_period() -> None:
    gate = DecodeGate()
    for at in (0.0, 1.0, 1.7, 3.5):
        gate.on_frame(at, True, -math.inf, 0.5)
    assert gate.natural_key_at(3.6) == NEVER


def test_key_frame_detection() -> None:
    assert is_key_frame("video/vp8", b"\x10\x02\x00\x9d\x01\x2a") is True
    assert is_key_frame("video/vp8", b"\x31\x02\x00") is False
    idr = b"\x00\x00\x00\x01\x67\x42\x00\x1f\x00\x00\x00\x01\x68\xce\x00\x00\x00\x01\x65\x88"
    assert is_key_frame("video/h264", idr) is True
    assert is_key_frame("video/h264", b"\x00\x00\x00\x01\x41\x9a\x00") is False
    assert is_key_frame("video/h264", b"") is False
    assert is_key_frame("video/av1", b"\x12\x00") is None


def vp8_stream(count: int, gop: int, size: tuple[int, int] = (320, 240)) -> list[bytes]:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = size
    codec.pix_fmt = "yuv420p"
    codec.time_base = fractions.Fraction(1, 30)
    codec.gop_size = gop
    # "good", not "realtime": a realtime encoder adapts to how fast it runs, so the
    # stream (and any figure measured on it) would change with the machine's load
    codec.options = {
        "deadline": "good",
        "lag-in-frames": "0",
        "cpu-used": "5",
        "keyint_min": str(gop),
    }
    out = []
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    for i in range(count):
        rgb = np.stack([(x + 3 * i) % 256, y % 256, (x // 32 + i) % 2 * 255], axis=-1)
        frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in codec.encode(frame)]
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_real_vp8_decodes_from_each_key_frame_to_the_frame_the_sampler_takes() -> None:
    stream = vp8_stream(90, gop=30)
    assert [is_key_frame("video/vp8", f) for f in stream].count(True) == 3
    clock = Clock()
    state = {"due": -math.inf}
    delivered: list[av.VideoFrame] = []
    plis: list[float] = []
    decoder = VideoDecoder(
        due=lambda: state["due"],
        interval=lambda: 0.5,
        deliver=delivered.append,
        request_key_frame=lambda: plis.append(clock.now),
        clock=clock,
    )
    taken = []
    for i, data in enumerate(stream):
        clock.now = i / 30
        before = len(delivered)
        decoder(VP8, data, i * 3000)
        if len(delivered) > before and clock.now >= state["due"]:
            taken.append(i)
            state["due"] = clock.now + 0.5
            decoder.sampled()
    assert all(f.width == 320 and f.height == 240 for f in delivered)
    assert taken == [0, 15, 30, 45, 60, 75]  # 2 images a second
    assert decoder.gate.stats.decode_errors == 0
    assert decoder.gate.stats.decoded < 90
    # the skipped frames were really skipped: the decoder never saw a broken chain
    images = [f.to_ndarray(format="rgb24") for f in delivered[-3:]]
    assert all(img.std() > 10 for img in images)


def test_frames_nobody_wants_are_not_decoded() -> None:
    stream = vp8_stream(30, gop=30)
    delivered: list[av.VideoFrame] = []
    decoder = VideoDecoder(
        due=lambda: NEVER,
        interval=lambda: 0.5,
        deliver=delivered.append,
        request_key_frame=lambda: None,
    )
    for i, data in enumerate(stream):
        decoder(VP8, data, i * 3000)
    assert delivered == []
    assert decoder.gate.stats.decoded == 0


def test_an_undecodable_frame_asks_for_a_key_frame() -> None:
    plis: list[int] = []
    decoder = VideoDecoder(
        due=lambda: -math.inf,
        interval=lambda: 0.5,
        deliver=lambda f: None,
        request_key_frame=lambda: plis.append(1),
    )
    decoder(VP8, b"\x10\x02\x00\x9d\x01\x2a\xff\xff", 0)  # a key frame header, then junk
    assert decoder.gate.stats.decode_errors == 1
    assert plis == [1]
    assert not decoder.gate.chain


@pytest.mark.parametrize("fps", [30.0, 15.0])
def test_jittery_arrival_keeps_the_period(fps: float) -> None:
    rng = np.random.default_rng(1)
    gate = DecodeGate()
    for k in range(6):
        gate.on_frame(k * 1.0 + float(rng.uniform(0, 0.01)), True, -math.inf, 0.5)
    assert gate.natural_key_at(5.2) == pytest.approx(6.0, abs=0.05)


def test_lean_holds_on_a_loaded_loop_where_key_frames_arrive_late() -> None:
    # key frames every second, arriving up to 300 ms late (a loop at 95%): no steady
    # period, but key frames often enough to take images from them alone
    gate = DecodeGate()
    decoded = 0
    for index in range(30 * 20):
        now = index / 30 + 0.15 + 0.15 * math.sin(index / 7)  # in order, 0..300 ms late
        decode, _ = gate.on_frame(now, index % 30 == 0, now + 0.2, 0.5, lean=index >= 150)
        decoded += decode and index >= 150
    assert decoded == 15  # the 15 key frames after 5 s, nothing else
    assert gate.stats.plis == 0


class WaitingExecutor(ThreadPoolExecutor):
    """Each job waits ``wait`` s (give or take ``jitter``) in the thread before it runs:
    a busy executor."""

    def __init__(self, wait: float, jitter: float = 0.0) -> None:
        super().__init__(max_workers=1)
        self.wait = wait
        self.jitter = jitter
        self.random = random.Random(7)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        wait = self.wait + self.random.uniform(-self.jitter, self.jitter)

        def waited() -> Any:
            time.sleep(wait)
            return fn(*args, **kwargs)

        return super().submit(waited)


@pytest.mark.parametrize("jitter", [0.0, 0.1])
async def test_a_busy_jpeg_executor_does_not_make_the_gate_decode_whole_chains(
    jitter: float,
) -> None:
    """JPEGs that wait 150 ms (give or take ``jitter``) for their thread (a loaded
    host): the sampler still takes its frames on its grid.  Taken ahead of it by the
    whole wait, or later and later as late images pushed the next ones, they would fall
    where the gate has no key frame, and every image would cost a chain of inter frames
    (25-26 frames a second here)."""
    from omni_rtc.media.frame_sampler import FrameSampler
    from omni_rtc.media.jpeg import JpegEncoder

    stream = vp8_stream(180, gop=30)
    sent: list[float] = []

    async def send(jpeg: bytes) -> None:
        sent.append(time.monotonic())

    jpeg_thread = WaitingExecutor(0.15, jitter)
    sampler = FrameSampler(
        None, fps=2, encoder=JpegEncoder(), can_send=lambda: True, send=send,
        executor=jpeg_thread,
    )  # fmt: skip
    decoder = VideoDecoder(
        due=sampler.next_frame_due,
        interval=lambda: sampler.interval,
        deliver=sampler.offer,
        request_key_frame=lambda: None,
    )
    sampler.on_sample = decoder.sampled
    sampler.start()
    decoded_at: list[int] = []
    try:
        start = time.monotonic()
        for i, data in enumerate(stream):
            await asyncio.sleep(max(0.0, start + i / 30 - time.monotonic()))
            decoder(VP8, data, i * 3000)
            decoded_at.append(decoder.gate.stats.decoded)
    finally:
        await sampler.stop()
        jpeg_thread.shutdown()
    per_second = (decoded_at[-1] - decoded_at[89]) / 3  # the last 3 s, the period learnt
    assert per_second <= 19, per_second  # each key frame up to the image after it: 16
    assert len(sent) >= 10, sent  # 2 images a second, each a little late
