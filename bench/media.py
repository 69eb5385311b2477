"""Media-path benchmark: added latency per direction, flush time, pacing jitter, CPU.

Run: ``python bench/media.py``.  Prints figures; targets from the media-path issue:
uplink added <= chunk length + 5 ms, downlink first frame <= 25 ms after the first
delta, flush <= one frame.  CPU figures are also given as a ratio to aiortc's own
Opus decode/encode of the same audio, measured in the same run, so they survive the
machine's noise.
"""

from __future__ import annotations

import asyncio
import fractions
import statistics
import time
from collections.abc import Callable

import av
import numpy as np
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import compute_audio_level_dbov

from omni_rtc.media.audio_in import AudioIn
from omni_rtc.media.jpeg import JpegEncoder, JpegLimits
from omni_rtc.media.opus import OpusDecoder as CallerOpusDecoder
from omni_rtc.media.opus import OpusEncoder as CallerOpusEncoder
from omni_rtc.media.reply_track import REPLY_OPUS_BITRATE, ReplyTrack

IN_RATE, OUT_RATE = 48_000, 24_000
UP_RATE = 16_000


def opus_frames(seconds: float) -> list[av.AudioFrame]:
    """20 ms 48 kHz stereo s16 frames of a voice-like signal, as aiortc decodes them."""
    frames = []
    n = IN_RATE // 50
    rng = np.random.default_rng(0)
    for i in range(int(seconds * 50)):
        t = (np.arange(n) + i * n) / IN_RATE
        x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n)
        s = (x * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(s[:, None], 2, axis=1).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = IN_RATE
        frame.pts = i * n
        frame.time_base = fractions.Fraction(1, IN_RATE)
        frames.append(frame)
    return frames


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def uplink(chunk_ms: int) -> dict[str, float]:
    """Latency a click suffers through AudioIn: resampler delay + wait for the chunk to fill."""
    delays = []
    for offset_ms in range(chunk_ms):  # every phase of the click within a chunk
        audio_in = AudioIn(UP_RATE, chunk_ms=chunk_ms)
        click_at = 0.2 + offset_ms / 1000  # seconds into the stream
        n = IN_RATE // 50
        got = None
        for i in range(40):
            s = np.zeros(n, dtype=np.int16)
            first = i * n
            k = int(click_at * IN_RATE) - first
            if 0 <= k < n:
                s[k] = 30000
            frame = av.AudioFrame.from_ndarray(
                np.repeat(s[:, None], 2, axis=1).reshape(1, -1), format="s16", layout="stereo"
            )
            frame.sample_rate = IN_RATE
            stream_time_after_frame = (i + 1) * n / IN_RATE  # when this frame has fully arrived
            produced = 0
            for chunk in audio_in.push(frame):
                pcm = np.frombuffer(chunk, dtype="<i2")
                if got is None and np.max(np.abs(pcm)) > 3000:
                    got = stream_time_after_frame
                produced += len(pcm)
            if got is not None:
                break
        assert got is not None
        # time from the end of the Opus frame that carried the click to its chunk's release
        frame_end = (int(click_at * IN_RATE) // n + 1) * n / IN_RATE
        delays.append((got - frame_end) * 1000)
    # what the converter itself adds beyond the 20 ms the Opus frame already takes to arrive
    frames = opus_frames(30.0)
    audio_in = AudioIn(UP_RATE, chunk_ms=chunk_ms)
    t0 = time.perf_counter()
    for f in frames:
        audio_in.push(f)
    per_frame_us = (time.perf_counter() - t0) / len(frames) * 1e6
    return {
        "wait_median_ms": statistics.median(delays),
        "wait_max_ms": max(delays),
        "cpu_per_frame_us": per_frame_us,
    }


async def consume(
    track: ReplyTrack, seconds: float, on_frame: Callable[[float, av.AudioFrame], None]
) -> None:
    """Pull frames like aiortc's RTP sender does, for ``seconds``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        frame = await track.recv()
        on_frame(loop.time(), frame)


class Probe:
    """Times from a marked moment to the first frame that matches a condition."""

    def __init__(self, wants_sound: bool) -> None:
        self.wants_sound = wants_sound
        self.marked: float | None = None
        self.found = asyncio.Event()
        self.delays_ms: list[float] = []
        self.mismatched_frames = 0

    def mark(self, now: float) -> None:
        self.marked = now
        self.found.clear()

    def on_frame(self, now: float, frame: av.AudioFrame) -> None:
        if self.marked is None:
            return
        if bool(np.any(frame.to_ndarray())) == self.wants_sound:
            self.delays_ms.append((now - self.marked) * 1000)
            self.marked = None
            self.found.set()
        else:
            self.mismatched_frames += 1


async def downlink() -> dict[str, float]:
    loop = asyncio.get_running_loop()
    rng = np.random.default_rng(1)
    # first delta in -> first frame out, at random phases against the 20 ms clock
    first_frame_ms: list[float] = []
    for idle in ("silence", "nothing"):
        track = ReplyTrack(OUT_RATE, idle=idle)
        probe = Probe(wants_sound=True)
        task = asyncio.create_task(consume(track, 6.0, probe.on_frame))
        await asyncio.sleep(0.1)
        for _ in range(25):
            await asyncio.sleep(0.1 + float(rng.uniform(0, 0.02)))
            probe.mark(loop.time())
            track.push((np.ones(2400, dtype="<i2") * 1000).tobytes())  # a 100 ms delta
            track.end_of_reply()
            await probe.found.wait()
            await asyncio.sleep(0.1)
        task.cancel()
        first_frame_ms += probe.delays_ms

    # flush -> first silent frame
    track = ReplyTrack(OUT_RATE)
    probe = Probe(wants_sound=False)
    task = asyncio.create_task(consume(track, 8.0, probe.on_frame))
    for _ in range(25):
        track.push((np.ones(24000, dtype="<i2") * 1000).tobytes())
        await asyncio.sleep(0.1 + float(rng.uniform(0, 0.02)))
        probe.mark(loop.time())
        track.flush()
        await probe.found.wait()
    task.cancel()
    flush_ms = probe.delays_ms

    # pacing jitter over 5 s
    track = ReplyTrack(OUT_RATE)
    stamps: list[float] = []
    await consume(track, 5.0, lambda now, f: stamps.append(now))
    intervals = np.diff(stamps) * 1000
    drift_ms = (stamps[-1] - stamps[0] - (len(stamps) - 1) * 0.02) * 1000
    return {
        "first_frame_median_ms": statistics.median(first_frame_ms),
        "first_frame_p95_ms": pct(first_frame_ms, 95),
        "first_frame_max_ms": max(first_frame_ms),
        "flush_median_ms": statistics.median(flush_ms),
        "flush_max_ms": max(flush_ms),
        "frames_after_flush": probe.mismatched_frames,
        "interval_mean_ms": float(np.mean(intervals)),
        "interval_std_ms": float(np.std(intervals)),
        "interval_p99_dev_ms": pct(list(np.abs(intervals - 20)), 99),
        "drift_over_5s_ms": drift_ms,
    }


def cpu() -> dict[str, float]:
    seconds = 30.0
    frames = opus_frames(seconds)
    # baseline: aiortc's Opus decode of the same audio (what every call already costs)
    encoder = OpusEncoder()
    packets = []
    for f in frames:
        payloads, _ = encoder.encode(f)
        packets += payloads
    decoder = OpusDecoder()
    t0 = time.process_time()
    for i, p in enumerate(packets):
        decoder.decode(JitterFrame(data=p, timestamp=i * 960))
    opus_decode = (time.process_time() - t0) / seconds

    audio_in = AudioIn(UP_RATE, chunk_ms=20)
    t0 = time.process_time()
    for f in frames:
        audio_in.push(f)
    audio_in_cpu = (time.process_time() - t0) / seconds

    # reply track frame production (no pacing: count only the work per frame)
    track = ReplyTrack(OUT_RATE)
    track.push(bytes(int(seconds * OUT_RATE) * 2))
    t0 = time.process_time()
    for _ in range(int(seconds * 50)):
        track._next_frame()
    reply_cpu = (time.process_time() - t0) / seconds

    # Opus encode of the reply (aiortc's share, for the ratio)
    enc = OpusEncoder()
    reply_frames = []
    track = ReplyTrack(OUT_RATE)
    track.push(bytes(int(seconds * OUT_RATE) * 2))
    for _ in range(int(seconds * 50)):
        reply_frames.append(track._next_frame())
    t0 = time.process_time()
    for f in reply_frames:
        enc.encode(f)
    opus_encode = (time.process_time() - t0) / seconds

    # what a WebRTC call does instead: libopus straight to 16 kHz mono, pcm into AudioIn
    caller = CallerOpusDecoder(UP_RATE, 1)
    audio_in = AudioIn(UP_RATE, chunk_ms=20)
    t0 = time.process_time()
    for p in packets:
        audio_in.push_pcm(caller.decode(p), UP_RATE)
    caller_path = (time.process_time() - t0) / seconds
    # aiortc's path for the same packets: decode to 48 kHz stereo, then AudioIn resamples
    audio_in = AudioIn(UP_RATE, chunk_ms=20)
    decoder = OpusDecoder()
    t0 = time.process_time()
    for i, p in enumerate(packets):
        for frame in decoder.decode(JitterFrame(data=p, timestamp=i * 960)):
            audio_in.push(frame)  # type: ignore[arg-type]
    aiortc_path = (time.process_time() - t0) / seconds
    # and the reply: OpusReplyTrack's encode on the loop vs aiortc's resample + level + encode
    reply_encoder = CallerOpusEncoder(OUT_RATE, 1, bitrate=REPLY_OPUS_BITRATE)
    pcm = [bytes(f.planes[0])[: f.samples * 2] for f in reply_frames]
    t0 = time.process_time()
    for chunk in pcm:
        reply_encoder.encode(chunk)
    reply_opus = (time.process_time() - t0) / seconds
    enc = OpusEncoder()
    t0 = time.process_time()
    for f in reply_frames:
        compute_audio_level_dbov(f)
        enc.encode(f)
    aiortc_reply = (time.process_time() - t0) / seconds

    results = {
        "caller_path_pct": caller_path * 100,
        "aiortc_caller_path_pct": aiortc_path * 100,
        "reply_opus_pct": reply_opus * 100,
        "aiortc_reply_pct": aiortc_reply * 100,
        "opus_decode_pct": opus_decode * 100,
        "audio_in_pct": audio_in_cpu * 100,
        "audio_in_vs_opus_decode": audio_in_cpu / opus_decode,
        "opus_encode_pct": opus_encode * 100,
        "reply_track_pct": reply_cpu * 100,
        "reply_track_vs_opus_encode": reply_cpu / opus_encode,
    }
    for label, size in (("640x480", (640, 480)), ("1280x720", (1280, 720))):
        w, h = size
        y, x = np.mgrid[0:h, 0:w]
        rgb = np.stack([x % 256, y % 256, (x // 32 + y // 32) % 2 * 255], axis=-1).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        encoder_j = JpegEncoder(JpegLimits())
        encoder_j.encode(frame)
        t0 = time.process_time()
        for _ in range(20):
            image = encoder_j.encode(frame)
        per_image = (time.process_time() - t0) / 20
        results[f"jpeg_{label}_ms"] = per_image * 1000
        results[f"jpeg_{label}_kb"] = len(image.data) / 1000
        results[f"frame_sampler_{label}_at_2fps_pct"] = per_image * 2 * 100
    return results


def main() -> None:
    print("omni-rtc media path benchmark")
    print(f"PyAV {av.__version__}, numpy {np.__version__}\n")
    print("Uplink (AudioIn, 48 kHz stereo Opus frames -> 16 kHz mono chunks)")
    for chunk_ms in (20, 40):
        r = uplink(chunk_ms)
        added = r["wait_max_ms"] + r["cpu_per_frame_us"] / 1000
        verdict = "OK" if added <= chunk_ms + 5 else "MISS"
        print(
            f"  chunk {chunk_ms} ms: a sample leaves {r['wait_median_ms']:.1f} ms (median) / "
            f"{r['wait_max_ms']:.1f} ms (max) after its 20 ms Opus frame arrived; "
            f"{r['cpu_per_frame_us']:.0f} us CPU per frame"
        )
        print(f"    added by the bridge <= {added:.1f} ms (target <= {chunk_ms + 5} ms): {verdict}")
    print("\nDownlink (ReplyTrack, 24 kHz, paced 20 ms frames)")
    d = asyncio.run(downlink())
    print(
        f"  first delta in -> first frame out: median {d['first_frame_median_ms']:.1f} ms, "
        f"p95 {d['first_frame_p95_ms']:.1f} ms, max {d['first_frame_max_ms']:.1f} ms "
        f"(target <= 25 ms): {'OK' if d['first_frame_p95_ms'] <= 25 else 'MISS'}"
    )
    print(
        f"  flush -> silent frame: median {d['flush_median_ms']:.1f} ms, max "
        f"{d['flush_max_ms']:.1f} ms; frames of audio after a flush: {d['frames_after_flush']:.0f} "
        f"(target <= one frame): {'OK' if d['frames_after_flush'] == 0 else 'MISS'}"
    )
    print(
        f"  pacing: mean interval {d['interval_mean_ms']:.3f} ms, "
        f"std {d['interval_std_ms']:.2f} ms, p99 |deviation| {d['interval_p99_dev_ms']:.2f} ms, "
        f"drift over 5 s {d['drift_over_5s_ms']:.2f} ms"
    )
    print("\nCPU per stream (% of one core)")
    c = cpu()
    print(
        f"  AudioIn {c['audio_in_pct']:.2f}% vs aiortc Opus decode {c['opus_decode_pct']:.2f}% "
        f"(ratio {c['audio_in_vs_opus_decode']:.2f})"
    )
    print(
        f"  ReplyTrack {c['reply_track_pct']:.2f}% vs aiortc Opus encode "
        f"{c['opus_encode_pct']:.2f}% "
        f"(ratio {c['reply_track_vs_opus_encode']:.2f})"
    )
    print(
        f"  caller Opus -> 16 kHz chunks: libopus at 16 kHz + AudioIn {c['caller_path_pct']:.2f}% "
        f"vs aiortc's decode to 48 kHz stereo + AudioIn {c['aiortc_caller_path_pct']:.2f}% "
        f"(ratio {c['caller_path_pct'] / c['aiortc_caller_path_pct']:.2f}; threads not counted)"
    )
    print(
        f"  reply -> Opus: OpusReplyTrack {c['reply_opus_pct']:.2f}% vs aiortc's resample + "
        f"level + encode {c['aiortc_reply_pct']:.2f}% "
        f"(ratio {c['reply_opus_pct'] / c['aiortc_reply_pct']:.2f}; threads not counted)"
    )
    for label in ("640x480", "1280x720"):
        print(
            f"  FrameSampler JPEG {label}: {c[f'jpeg_{label}_ms']:.1f} ms per image, "
            f"{c[f'jpeg_{label}_kb']:.0f} KB -> "
            f"{c[f'frame_sampler_{label}_at_2fps_pct']:.2f}% at 2 fps"
        )


if __name__ == "__main__":
    main()
