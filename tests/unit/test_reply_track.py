import asyncio
import fractions

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from omni_rtc.media.opus import OpusDecoder
from omni_rtc.media.reply_track import QUIET_PEAK, OpusReplyTrack, ReplyTrack, is_quiet
from tests.helpers import best_correlation

RATE = 24_000


class VirtualTime:
    """A clock that only moves when the track sleeps: pacing checked exactly, instantly."""

    def __init__(self) -> None:
        self.now = 100.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def make_track(**kwargs) -> tuple[ReplyTrack, VirtualTime]:
    vt = VirtualTime()
    return ReplyTrack(RATE, clock=vt.clock, sleep=vt.sleep, **kwargs), vt


def ramp(seconds: float) -> bytes:
    n = int(seconds * RATE)
    return ((np.arange(n) % 20000) + 1).astype("<i2").tobytes()  # never zero: gaps show


def pcm_of(frame) -> bytes:
    return bytes(frame.planes[0])[: frame.samples * 2]


async def test_emits_50_frames_per_second_of_480_samples_with_monotonic_pts() -> None:
    track, vt = make_track()
    start = vt.now
    frames = [await track.recv() for _ in range(150)]
    # the first frame goes out at once; frame n is due n*20 ms later
    assert vt.now - start == pytest.approx(149 * 0.02)
    assert all(f.samples == 480 and f.sample_rate == RATE for f in frames)
    assert [f.pts for f in frames] == [i * 480 for i in range(150)]
    assert all(f.format.name == "s16" and f.layout.name == "mono" for f in frames)
    assert track.stats.frames_sent == 150


async def test_real_clock_pacing_is_50_per_second() -> None:
    track = ReplyTrack(RATE)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(26):
        await track.recv()
    elapsed = loop.time() - start
    assert 0.45 <= elapsed <= 0.7  # 25 intervals of 20 ms, loose for a busy machine


async def test_burst_of_3s_delivered_in_0_2s_plays_without_gaps() -> None:
    track, _ = make_track()
    audio = ramp(3.0)
    sizes = [4801, 9599, 1, 12345, 777]  # odd sizes included
    pieces, i, k = [], 0, 0
    while i < len(audio):
        pieces.append(audio[i : i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
        k += 1

    async def deliver() -> None:
        for piece in pieces:
            track.push(piece)
            await asyncio.sleep(0.2 / len(pieces))
        track.end_of_reply()

    out = bytearray()
    feeder = asyncio.create_task(deliver())
    first = await track.recv()  # silence until the first delta lands
    await feeder
    out += pcm_of(first).lstrip(b"\0") if any(pcm_of(first)) else b""
    while track.playing:
        out += pcm_of(await track.recv())
    assert bytes(out[: len(audio)]) == audio
    assert not any(out[len(audio) :])
    assert track.stats.underruns == 0
    assert track.stats.reply_frames == 150


async def test_flush_makes_the_next_frame_silent() -> None:
    track, _ = make_track()
    track.push(ramp(2.0))
    for _ in range(5):
        assert any(pcm_of(await track.recv()))
    dropped = track.flush()
    assert 1850 <= dropped <= 1900
    assert track.queued_ms == 0
    assert not any(pcm_of(await track.recv()))
    assert track.stats.flushes == 1


async def test_odd_byte_chunks_reassemble_exactly() -> None:
    track, _ = make_track()
    audio = ramp(0.1)
    for i in range(0, len(audio), 3):
        track.push(audio[i : i + 3])
    track.end_of_reply()
    out = b"".join([pcm_of(await track.recv()) for _ in range(5)])
    assert out == audio


async def test_underruns_count_only_inside_a_reply() -> None:
    track, _ = make_track()
    for _ in range(3):
        await track.recv()  # idle silence: not an underrun
    track.push(ramp(0.1))
    for _ in range(10):
        await track.recv()
    assert track.stats.underruns == 5
    track.end_of_reply()
    await track.recv()
    before = track.stats.underruns
    for _ in range(5):
        await track.recv()
    assert track.stats.underruns == before


async def test_drained_callback_after_the_last_frame() -> None:
    track, _ = make_track()
    drained: list[int] = []
    track.on_drained = lambda: drained.append(track.stats.frames_sent)
    track.push(ramp(0.05))  # 2.5 frames
    track.end_of_reply()
    for _ in range(5):
        await track.recv()
    assert drained == [3]


async def test_idle_nothing_sends_no_frames_and_skips_pts_ahead() -> None:
    track, vt = make_track(idle="nothing")
    pending = asyncio.create_task(track.recv())
    await asyncio.sleep(0.01)
    assert not pending.done()  # no audio: no frame, no encode work
    vt.now += 1.0  # a second passes in silence
    track.push(ramp(0.04))
    frame = await asyncio.wait_for(pending, 1)
    assert any(pcm_of(frame))
    assert frame.pts >= 50 * 480  # timestamps reflect the idle second
    second = await track.recv()
    assert second.pts == frame.pts + 480
    track.stop()


async def test_idle_nothing_ends_a_reply_whose_end_came_after_its_last_frame() -> None:
    """With ``--idle-audio nothing`` a reply that ran out before the model said it was
    done still ends (the caller's state leaves "speaking"), on both ways of pacing."""
    paced, _ = make_track(idle="nothing")
    drained: list[str] = []
    paced.on_drained = lambda: drained.append("paced")
    paced.push(ramp(0.04))
    assert paced.take_paced() is not None
    assert paced.take_paced() is not None
    assert paced.take_paced() is None
    assert paced.playing
    paced.end_of_reply()
    assert paced.take_paced() is None
    assert drained == ["paced"]
    assert not paced.playing

    track, _vt = make_track(idle="nothing")
    track.on_drained = lambda: drained.append("recv")
    track.push(ramp(0.04))
    await track.recv()
    await track.recv()
    pending = asyncio.create_task(track.recv())
    await asyncio.sleep(0.01)
    track.end_of_reply()
    await asyncio.sleep(0.01)
    assert drained == ["paced", "recv"]
    assert not track.playing
    assert not pending.done()  # and nothing more is sent
    pending.cancel()
    track.stop()


async def test_idle_nothing_a_new_reply_after_a_wait_is_not_a_gap_in_the_old_one() -> None:
    """One reply ends and the next begins while recv() waits: the first is over (once),
    and the time between them is not counted as the new reply running dry."""
    track, vt = make_track(idle="nothing")
    drained: list[int] = []
    track.on_drained = lambda: drained.append(1)
    track.push(ramp(0.04))
    await track.recv()
    await track.recv()
    pending = asyncio.create_task(track.recv())
    await asyncio.sleep(0.01)
    vt.now += 2.0
    track.end_of_reply()  # all in one turn of the loop, before recv() resumes
    track.new_reply()
    track.push(ramp(0.04))
    await asyncio.wait_for(pending, 1)
    assert drained == [1]
    assert track.stats.underruns == 0
    assert track.playing
    track.stop()


async def test_idle_nothing_counts_a_reply_that_ran_dry_and_catches_up() -> None:
    """Sending nothing in a reply's gap delays the rest as padding would: it is counted
    as underruns, and shed later in a pause like padding."""
    track, _ = make_track(idle="nothing")
    audio = beeps(6.0)
    arrivals: dict[int, list[bytes]] = {}
    for start in range(0, len(audio), 2 * FRAME):
        tick = start // FRAME
        arrivals.setdefault(max(tick, 24) if 20 <= tick < 24 else tick, []).append(
            audio[start : start + 2 * FRAME]
        )
    played = bytearray()
    for tick in range(max(arrivals) + 1):
        for delta in arrivals.get(tick, []):
            track.push(delta)
        taken = track.take_paced()
        if taken is not None:
            played += taken[0]
    assert track.stats.underruns == 4  # the 80 ms the stall left nothing to send
    assert track.stats.caught_up_ms == 80  # and the same delay, shed in pauses
    assert np.array_equal(speech_order(bytes(played)), speech_order(audio))

    gap, vt = make_track(idle="nothing")  # the same through recv()
    gap.push(ramp(0.04))
    await gap.recv()
    await gap.recv()
    pending = asyncio.create_task(gap.recv())
    await asyncio.sleep(0.01)
    vt.now += 0.11  # 110 ms with nothing to send, mid-reply
    gap.push(ramp(0.04))
    late = await asyncio.wait_for(pending, 1)
    skipped = late.pts // 480 - 2  # frames that went unsent
    assert skipped >= 4
    assert gap.stats.underruns == skipped
    assert gap.playing
    gap.stop()


async def test_played_samples_count_for_truncation() -> None:
    track, _ = make_track()
    track.new_reply()
    track.push(ramp(1.0))
    for _ in range(10):
        await track.recv()
    assert track.reply_samples_played == 4800
    track.flush()
    track.new_reply()
    assert track.reply_samples_played == 0


# ---------------------------------------------------------------- catching up a live stream

FRAME = 480 * 2


def beeps(seconds: float, beep_ms: int = 300, period_ms: int = 1000) -> bytes:
    """Speech-like bursts (never zero) with quiet pauses between: a live caller's echo."""
    out = bytearray(ramp(seconds))
    period, beep = period_ms * RATE // 1000 * 2, beep_ms * RATE // 1000 * 2
    for start in range(0, len(out), period):
        out[start + beep : start + period] = bytes(len(out[start + beep : start + period]))
    return bytes(out)


def stream_live(track: ReplyTrack, audio: bytes, *, late_at: int, late_by: int) -> list[int]:
    """Feed ``audio`` as a live stream does, a 40 ms delta every other 20 ms tick with one
    take per tick, except that the deltas due in ticks ``late_at`` to ``late_at +
    late_by`` come together at the end of that stall; the queue's depth in frames after
    each arrival."""
    arrivals: dict[int, list[bytes]] = {}
    for start in range(0, len(audio), 2 * FRAME):
        tick = start // FRAME
        if late_at <= tick < late_at + late_by:
            tick = late_at + late_by
        arrivals.setdefault(tick, []).append(audio[start : start + 2 * FRAME])
    depths: list[int] = []
    for tick in range(max(arrivals) + 20):
        if tick in arrivals:
            for delta in arrivals[tick]:
                track.push(delta)
            depths.append(len(track._queue) // FRAME)
        track.take_frame()
    return depths


def speech_order(pcm: bytes) -> np.ndarray:
    samples = np.frombuffer(pcm, dtype="<i2")
    return samples[samples != 0]


async def test_a_late_delta_in_a_live_stream_is_shed_in_a_pause_not_kept_for_good() -> None:
    track, _ = make_track()
    audio = beeps(10.0)
    played = bytearray()
    original = track._next_payload

    def recording() -> tuple[bytes, int, bool]:
        payload = original()
        played.extend(payload[0])
        return payload

    track._next_payload = recording  # type: ignore[method-assign]
    depths = stream_live(track, audio, late_at=20, late_by=4)  # one delta 80 ms late
    before, after_stall, end = depths[5], depths[15], depths[-20]
    assert after_stall == before + 4  # the late delta's delay, kept by plain pacing...
    assert end == before  # ...until it was shed
    assert track.stats.caught_up_ms == 80
    assert track.stats.underruns > 0  # the stall itself
    # no speech lost or reordered: only quiet frames were skipped
    assert np.array_equal(speech_order(bytes(played)), speech_order(audio))
    # the reply's position moved past the skipped audio (truncation stays exact)
    assert track.reply_samples_played == len(audio) // 2


def stream_with_stalls(track: ReplyTrack, audio: bytes, stalls: dict[int, int]) -> list[int]:
    """As :func:`stream_live` with a stall of ``stalls[tick]`` ticks at each such tick; the
    queue's depth in frames before each tick's take."""
    arrivals: dict[int, list[bytes]] = {}
    held_until = -1
    for start in range(0, len(audio), 2 * FRAME):
        tick = start // FRAME
        for at, late_by in stalls.items():
            if at <= tick < at + late_by:
                held_until = at + late_by
        arrivals.setdefault(max(tick, held_until), []).append(audio[start : start + 2 * FRAME])
    depths: list[int] = []
    for tick in range(max(arrivals) + 1):
        for delta in arrivals.get(tick, []):
            track.push(delta)
        depths.append(len(track._queue) // FRAME)
        track.take_frame()
    return depths


def without_catching_up(track: ReplyTrack) -> ReplyTrack:
    track._catch_up = lambda: None  # type: ignore[method-assign]
    return track


async def test_a_short_call_loses_a_late_delta_within_seconds() -> None:
    """The first shed waits one second of spare depth, not five: a short call (a question,
    a beep test) gets its delay back while it lasts."""
    audio = beeps(10.0)
    plain = stream_with_stalls(without_catching_up(make_track()[0]), audio, {20: 4})
    track, _ = make_track()
    depths = stream_with_stalls(track, audio, {20: 4})
    four_s_later = 24 + 200
    assert plain[four_s_later] == plain[10] + 4  # plain pacing keeps the stall's 80 ms
    assert depths[four_s_later] == depths[10]  # here it is gone four seconds after
    assert track.stats.caught_up_ms == 80


async def test_half_the_spare_depth_goes_at_a_time() -> None:
    """Shedding what the queue did not need for a second only half at a time: if the
    next late delta comes soon after, the reply does not run dry at once."""
    track, _ = make_track()
    depths = stream_with_stalls(track, beeps(10.0), {20: 4})
    assert depths[24 + 30] == depths[10] + 4  # the stall's 80 ms, before the look-back
    assert depths[24 + 76] == depths[10] + 2  # a second later: half of it shed
    assert depths[24 + 200] == depths[10]  # then the rest, in smaller steps


async def test_what_one_reply_learned_is_not_unlearned_or_misread_by_the_next() -> None:
    """A shed in one reply does not make the next reply's first stall look premature."""
    track, _ = make_track()
    stream_with_stalls(track, beeps(4.0), {20: 4})
    assert track.stats.caught_up_ms == 80  # shed, and not premature
    track.end_of_reply()
    for _ in range(100):
        track.take_frame()
    assert not track.playing
    track.new_reply()
    depths = stream_with_stalls(track, beeps(10.0), {20: 4})  # within 10 s of that shed
    assert depths[24 + 200] == depths[10]  # still shed after a second's look-back


async def test_a_reply_that_ran_dry_again_stops_shedding_at_once() -> None:
    """A shed is spent one pause at a time; if the reply runs dry before it is spent,
    what is left of it is not shed (the margin was needed after all)."""
    pcm = np.frombuffer(ramp(8.0), dtype="<i2").copy()
    for frame in range(5, len(pcm) // 480, 6):  # speech with a 20 ms pause every 120 ms
        pcm[frame * 480 : (frame + 1) * 480] = 0
    track, _ = make_track()
    events: list[tuple[int, str]] = []
    ticks = 0
    take = track.take_frame

    def logged() -> av.AudioFrame:
        nonlocal ticks
        shed, dry = track.stats.caught_up_ms, track.stats.underruns
        frame = take()
        if track.stats.caught_up_ms > shed:
            events.append((ticks, "shed"))
        if track.stats.underruns > dry:
            events.append((ticks, "dry"))
        ticks += 1
        return frame

    track.take_frame = logged  # type: ignore[method-assign]
    stream_with_stalls(track, pcm.tobytes(), {20: 10, 100: 14})  # 200 ms, then 280 ms late
    first_shed = next(tick for tick, kind in events if kind == "shed")
    dry_again = next(tick for tick, kind in events if kind == "dry" and tick > first_shed)
    later_sheds = [tick for tick, kind in events if kind == "shed" and tick > dry_again]
    assert later_sheds, "the delay is shed in the end"
    assert later_sheds[0] - dry_again > 50 * 4  # not a second after, but after a look-back


async def test_late_deltas_that_recur_keep_the_margin_they_need() -> None:
    """A delta 60 ms late every 1.5 s: shedding after a second proves premature once,
    the call's look-back becomes five seconds, and the stream settles with the margin
    instead of running dry again and again."""
    audio = beeps(40.0)
    stalls = {tick: 3 for tick in range(20, 2000, 75)}
    plain = without_catching_up(make_track()[0])
    stream_with_stalls(plain, audio, stalls)
    track, _ = make_track()
    depths = stream_with_stalls(track, audio, stalls)
    assert track.stats.underruns - plain.stats.underruns <= 3  # one lesson, then none
    assert min(depths[-500:]) >= 1  # the last 10 s never ran dry
    # The lesson is the call's: its next reply keeps a stall's delay for longer than
    # the first second (a fresh call sheds it within four, as above).
    track.flush()
    track.new_reply()
    depths = stream_with_stalls(track, beeps(10.0), {20: 4})
    assert depths[24 + 200] == depths[10] + 4


async def test_what_was_skipped_to_catch_up_reaches_the_metrics() -> None:
    """Operators see catching up happen: the downlink counts the skipped pauses."""
    from types import SimpleNamespace

    from omni_rtc.conversation.downlink import Downlink
    from omni_rtc.metrics import Metrics

    track, _ = make_track()
    metrics = Metrics()
    conversation = SimpleNamespace(
        sink=track, metrics=metrics, profile=SimpleNamespace(output_rate=RATE)
    )
    downlink = Downlink(conversation)  # type: ignore[arg-type]
    stream_with_stalls(track, beeps(6.0), {20: 4})
    downlink.report_underruns()
    downlink.report_underruns()  # reported once, not twice
    sample = metrics.registry.get_sample_value("omni_rtc_reply_caught_up_seconds_total")
    assert track.caught_up_ms == 80
    assert sample == pytest.approx(0.08)


async def test_speech_is_never_skipped_to_catch_up() -> None:
    track, _ = make_track()
    audio = ramp(4.0)  # no pause anywhere
    depths = stream_live(track, audio, late_at=20, late_by=3)
    assert depths[-10] == depths[5] + 3  # the delay stays rather than a word going
    assert track.stats.caught_up_ms == 0


async def test_a_reply_that_never_ran_dry_keeps_its_pauses_however_it_goes_on() -> None:
    track, _ = make_track()
    audio = beeps(10.0)
    track.push(audio[: 2 * RATE * 2])  # a 2 s burst first...
    played = b"".join(pcm_of(track.take_frame()) for _ in range(2))
    rest = audio[2 * RATE * 2 :]
    for start in range(0, len(rest), 2 * FRAME):  # ...then 40 ms deltas at real time
        track.push(rest[start : start + 2 * FRAME])
        played += b"".join(pcm_of(track.take_frame()) for _ in range(2))
    played += b"".join(pcm_of(track.take_frame()) for _ in range(98))
    assert played == audio  # its 2 s lead is the model's, not a stall's: nothing shed
    assert track.stats.caught_up_ms == 0
    assert track.stats.underruns == 0


async def test_delay_that_could_not_be_shed_is_not_taken_out_of_the_next_reply() -> None:
    track, _ = make_track()
    stream_live(track, ramp(5.0), late_at=20, late_by=10)  # a stall in unbroken speech
    assert track.stats.caught_up_ms == 0
    track.flush()  # barge-in, then the model's next reply comes as a burst with pauses
    track.new_reply()
    audio = beeps(3.0)
    track.push(audio)
    assert b"".join(pcm_of(track.take_frame()) for _ in range(150)) == audio
    assert track.stats.caught_up_ms == 0


async def test_a_reply_faster_than_real_time_keeps_its_pauses() -> None:
    track, _ = make_track()
    audio = beeps(4.0)
    track.push(audio)  # the model's burst: seconds ahead of the playout
    played = b"".join(pcm_of(track.take_frame()) for _ in range(200))
    assert played == audio
    assert track.stats.caught_up_ms == 0


async def test_a_drained_tail_is_played_as_it_came() -> None:
    track, _ = make_track()
    track.push(beeps(1.5))  # all of it at once, then nothing more arrives
    for _ in range(40):
        track.take_frame()
    depth = len(track._queue)
    for _ in range(10):
        track.take_frame()
    assert depth - len(track._queue) == 10 * FRAME
    assert track.stats.caught_up_ms == 0


# ---------------------------------------------------------------- Opus packets for WebRTC


def make_opus_track(**kwargs) -> tuple[OpusReplyTrack, ReplyTrack, VirtualTime]:
    track, vt = make_track(**kwargs)
    return OpusReplyTrack(track), track, vt


def tone(seconds: float, freq: float = 330.0) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * freq * t) * 9000).astype("<i2").tobytes()


async def test_opus_track_sends_one_packet_per_20_ms_with_rtp_clock_pts() -> None:
    opus, track, vt = make_opus_track()
    start = vt.now
    packets = [await opus.recv() for _ in range(50)]
    assert vt.now - start == pytest.approx(49 * 0.02)  # same pacing as the frames
    assert all(isinstance(p, av.Packet) for p in packets)
    # Opus's RTP clock is 48 kHz whatever the rate (RFC 7587): 960 ticks a 20 ms packet
    assert [p.pts for p in packets] == [i * 960 for i in range(50)]
    assert all(p.time_base == fractions.Fraction(1, 48_000) for p in packets)
    assert track.stats.frames_sent == 50


async def test_opus_packets_decode_to_the_reply() -> None:
    opus, track, _ = make_opus_track()
    audio = tone(1.0)
    track.new_reply()
    track.push(audio)
    track.end_of_reply()
    decoder = OpusDecoder(RATE)
    out = b"".join([decoder.decode(bytes(await opus.recv())) for _ in range(55)])
    got = np.frombuffer(out, dtype="<i2").astype(np.float64)
    ref = np.frombuffer(audio, dtype="<i2").astype(np.float64)
    corr = max(
        np.corrcoef(ref[2000:20000], got[2000 + lag : 20000 + lag])[0, 1] for lag in range(200)
    )
    assert corr > 0.95
    assert track.reply_samples_played == RATE


async def test_opus_silence_between_replies_is_encoded_until_it_settles_then_reused() -> None:
    opus, track, _ = make_opus_track()
    silent = [bytes(await opus.recv()) for _ in range(50)]
    assert opus.packets_encoded < 10  # the rest were the settled silence packet
    assert opus.silence_reused == 50 - opus.packets_encoded
    assert len(set(silent[opus.packets_encoded :])) == 1
    decoder = OpusDecoder(RATE)
    quiet = np.frombuffer(b"".join(decoder.decode(p) for p in silent[-10:]), "<i2")
    assert np.abs(quiet).max() <= 8  # below -70 dBFS: silence
    # a reply after the silence is encoded again, and heard
    track.push(tone(0.2))
    track.end_of_reply()
    encoded = opus.packets_encoded
    reply = [bytes(await opus.recv()) for _ in range(10)]
    assert opus.packets_encoded == encoded + 10
    assert np.abs(np.frombuffer(b"".join(decoder.decode(p) for p in reply), "<i2")).max() > 4000


async def test_a_quiet_pause_settles_into_reused_silence_and_the_next_word_is_clean() -> None:
    opus, track, _ = make_opus_track()
    word = tone(0.4)
    rng = np.random.default_rng(1)
    hiss = rng.integers(-QUIET_PEAK, QUIET_PEAK + 1, int(1.0 * RATE)).astype("<i2").tobytes()
    track.new_reply()
    track.push(word + hiss + word)
    track.end_of_reply()
    decoder = OpusDecoder(RATE)
    packets = [bytes(await opus.recv()) for _ in range(95)]  # 1.8 s of reply, 0.1 s after
    assert track.stats.reply_frames == 90
    pause = packets[20:70]
    encoded_in_pause = 50 - opus.silence_reused
    assert encoded_in_pause < 10  # then the settled packet, sent again without encoding
    assert len(set(pause[encoded_in_pause:])) == 1
    out = np.frombuffer(b"".join(decoder.decode(p) for p in packets), "<i2").astype(float)
    frame = RATE // 50
    assert np.abs(out[30 * frame : 70 * frame]).max() <= QUIET_PEAK  # heard as silence
    # the word after the pause starts as cleanly as the first one
    ref = np.frombuffer(word, "<i2").astype(float)[: 5 * frame]
    first = best_correlation(ref, out[: 10 * frame], 200)
    second = best_correlation(ref, out[70 * frame : 80 * frame], 200)
    assert first > 0.95
    assert second > 0.95


async def test_reply_audio_just_above_the_quiet_peak_is_encoded() -> None:
    opus, track, _ = make_opus_track()
    faint = np.zeros(int(0.4 * RATE), "<i2")
    faint[:: RATE // 50] = QUIET_PEAK + 1  # one sample a frame above it
    track.new_reply()
    track.push(faint.tobytes())
    track.end_of_reply()
    for _ in range(20):
        await opus.recv()
    assert opus.packets_encoded == 20
    assert opus.silence_reused == 0
    assert not is_quiet(faint[: RATE // 50].tobytes())
    assert is_quiet(np.full(RATE // 50, -QUIET_PEAK, "<i2").tobytes())


async def test_opus_track_stops_with_its_reply_track_and_back() -> None:
    opus, track, _ = make_opus_track()
    await opus.recv()
    track.stop()
    with pytest.raises(MediaStreamError):
        await opus.recv()
    other, reply, _ = make_opus_track()
    other.stop()
    assert reply.readyState == "ended"


def test_opus_track_only_for_opus_rates() -> None:
    assert OpusReplyTrack.supports(ReplyTrack(24_000))
    assert OpusReplyTrack.supports(ReplyTrack(48_000))
    assert not OpusReplyTrack.supports(ReplyTrack(22_050))
