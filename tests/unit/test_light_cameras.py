"""Light decoding (no loop filter on inter frames): when a busy loop turns it on and off,
and what it does to real VP8 frames."""

from __future__ import annotations

import fractions
import logging
import math
from collections.abc import Callable

import av
import numpy as np
import pytest
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from omni_rtc.light_cameras import ENDED, STARTED, LightCameras
from omni_rtc.loop_load import LoopLoad
from omni_rtc.media.video_gate import DecodeGate, VideoDecoder, is_key_frame
from tests.unit.test_loop_load import MS, TICK, Ticks, default_limit, watched
from tests.unit.test_video_gate import VP8, vp8_stream

H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102)

WINDOW_S = 2.0


def run(
    light: LightCameras,
    start: float,
    seconds: float,
    busy: float,
    *,
    late: bool = False,
    lean: bool = False,
) -> list[str]:
    """Verdicts over ``seconds`` of 0.1 s ticks at one busy share."""
    said = []
    for k in range(round(seconds / 0.1)):
        verdict = light.judge(start + k * 0.1, busy, late=late, lean=lean)
        if verdict is not None:
            said.append(verdict)
    return said


def test_a_loop_under_80_percent_decodes_in_full() -> None:
    light = LightCameras(0.75, WINDOW_S)
    assert run(light, 0, 60, busy=0.79) == []
    assert not light.on


def test_a_busy_loop_goes_light_at_once_and_says_so_once() -> None:
    light = LightCameras(0.75, WINDOW_S)
    assert run(light, 0, 0.1, busy=0.80) == [STARTED]  # the first tick
    assert light.on
    assert run(light, 0.1, 30, busy=0.80) == []


def test_a_late_loop_goes_light_whatever_its_busy_share() -> None:
    light = LightCameras(0.75, WINDOW_S)
    assert run(light, 0, 1, busy=0.2, late=True) == [STARTED]


def test_light_holds_until_the_loop_has_been_calm_for_10_s() -> None:
    light = LightCameras(0.75, WINDOW_S)
    run(light, 0, 1, busy=0.9)
    assert run(light, 1, 120, busy=0.65) == []  # under 80%, but not under 60%: light
    assert run(light, 121, 9.9, busy=0.5) == []
    assert light.on
    assert run(light, 130.9, 0.2, busy=0.5) == [ENDED]
    assert not light.on


def test_a_busy_moment_restarts_the_calm_time() -> None:
    light = LightCameras(0.75, WINDOW_S)
    run(light, 0, 1, busy=0.9)
    run(light, 1, 8, busy=0.5)
    run(light, 9, 0.1, busy=0.7)  # not busy enough to start, enough to break the calm
    assert run(light, 9.1, 9.5, busy=0.5) == []
    assert run(light, 18.6, 1, busy=0.5) == [ENDED]


def test_light_stays_while_calls_are_lean() -> None:
    light = LightCameras(0.75, WINDOW_S)
    run(light, 0, 1, busy=0.95)
    assert run(light, 1, 60, busy=0.5, lean=True) == []  # lean work is no measure of full work
    assert run(light, 61, 10.1, busy=0.5) == [ENDED]


def test_a_limit_over_80_percent_is_where_light_starts() -> None:
    light = LightCameras(0.85, WINDOW_S)
    assert run(light, 0, 10, busy=0.84) == []
    assert run(light, 10, 0.1, busy=0.85) == [STARTED]


def test_a_higher_limit_moves_the_thresholds() -> None:
    light = LightCameras(0.9, WINDOW_S)  # --max-loop-busy 90
    assert run(light, 0, 10, busy=0.85) == []
    assert run(light, 10, 1, busy=0.9) == [STARTED]
    assert run(light, 11, 30, busy=0.7) == []  # 75% of 90% is 67.5%
    assert run(light, 41, 10.1, busy=0.6) == [ENDED]


def test_the_loop_load_turns_light_on_and_off_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    load, ticks = default_limit()
    with caplog.at_level(logging.INFO, logger="omni_rtc.load"):
        ticks.seconds(4, busy=0.7)
        assert not load.light
        ticks.seconds(4, busy=0.85)
        assert load.light
        assert not load.lean  # (key frames only from 90%)
        assert "without the loop filter" in load.describe()
        ticks.seconds(15, busy=0.5)
        assert not load.light
    said = [r.getMessage() for r in caplog.records if r.getMessage().endswith((STARTED, ENDED))]
    assert [m.endswith(STARTED) for m in said] == [True, False]
    assert "80% busy" in said[0]


def test_a_nearly_full_loop_is_light_and_lean() -> None:
    load, ticks = default_limit()
    ticks.seconds(4, busy=0.97)
    assert load.light
    assert load.lean


def test_no_call_goes_lean_when_light_decoding_is_enough() -> None:
    load, ticks = default_limit()
    for _ in range(round(60 / TICK)):  # 95% busy in full, 85% light
        ticks.run(1, busy=0.85 if load.light else 0.95)
    assert load.light
    assert not load.lean


def test_a_saturated_loop_goes_lean_at_once() -> None:
    load, ticks = default_limit()
    ticks.seconds(1.5, busy=0.5, lag_s=40 * MS)  # (light could not bring this back)
    assert load.light
    assert load.lean


def test_light_lasts_while_calls_are_lean_then_ends_when_calm() -> None:
    load, ticks = default_limit()
    ticks.seconds(5, busy=0.95)
    assert load.light
    assert load.lean
    ticks.seconds(6, busy=0.3)  # lean (from 3 s: light first) holds 10 s at least
    assert load.lean
    assert load.light
    while load.lean:
        ticks.seconds(0.1, busy=0.3)
    ticks.seconds(9.5, busy=0.3)
    assert load.light  # calm for 10 s from the end of lean
    ticks.seconds(1, busy=0.3)
    assert not load.light


def test_lean_starts_a_window_after_light_decoding_if_that_was_not_enough() -> None:
    load, ticks = default_limit()
    light_at = lean_at = None
    for k in range(round(10 / TICK)):  # 95% busy in full, 93% light
        ticks.run(1, busy=0.93 if load.light else 0.95)
        light_at = k * TICK if load.light and light_at is None else light_at
        lean_at = k * TICK if load.lean and lean_at is None else lean_at
    assert light_at is not None
    assert lean_at is not None
    assert lean_at - light_at == pytest.approx(2.0, abs=TICK * 1.5)


def test_a_disabled_guard_never_goes_light() -> None:
    load = LoopLoad(0.0, tick_s=TICK, window_s=WINDOW_S)
    Ticks(load).run(200, busy=1.0, lag_s=50 * MS)
    assert not load.light


def test_stopping_the_probe_ends_light_decoding() -> None:
    load, ticks = default_limit()
    ticks.seconds(4, busy=0.85)
    load.stop()
    assert not load.light


def test_the_metrics_show_light_decoding() -> None:
    load, ticks = default_limit()
    metrics = watched(load)
    ticks.seconds(4, busy=0.7)
    assert "omni_rtc_video_light 0.0" in metrics.render().decode()
    ticks.seconds(4, busy=0.85)
    assert "omni_rtc_video_light 1.0" in metrics.render().decode()


# ------------------------------------------------------------------ real VP8 frames


def decode_all(
    stream: list[bytes],
    light: Callable[[int], bool],
    codec: RTCRtpCodecParameters = VP8,
) -> tuple[list[np.ndarray], VideoDecoder]:
    """Every frame decoded (an image always due) at 30 a second, light asked for at
    frame ``i`` when ``light(i)``."""
    index = {"now": 0}
    frames: list[av.VideoFrame] = []
    decoder = VideoDecoder(
        due=lambda: -math.inf,
        interval=lambda: 0.5,
        deliver=frames.append,
        request_key_frame=lambda: None,
        light=lambda: light(index["now"]),
        clock=lambda: index["now"] / 30,
    )
    for i, data in enumerate(stream):
        index["now"] = i
        decoder(codec, data, i * 3000)
    assert decoder.gate.stats.decode_errors == 0
    return [f.to_ndarray(format="gray").astype(np.float64) for f in frames], decoder


def never(i: int) -> bool:
    return False


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


@pytest.fixture(scope="module")
def stream() -> list[bytes]:
    frames = vp8_stream(90, gop=30, size=(320, 240))
    assert [i for i, f in enumerate(frames) if is_key_frame("video/vp8", f)] == [0, 30, 60]
    return frames


def test_light_decoding_starts_at_the_next_key_frame_and_stays_close(stream: list[bytes]) -> None:
    full, _ = decode_all(stream, never)
    light, decoder = decode_all(stream, lambda i: i >= 10)  # asked for mid-chain
    assert decoder.decoding_light
    # the chain that was decoding in full goes on in full, up to and with the key frame
    assert all(np.array_equal(full[i], light[i]) for i in range(31))
    # then inter frames skip the loop filter: not the same pixels, but close to them
    differ = [i for i in range(31, 90) if not np.array_equal(full[i], light[i])]
    assert len(differ) >= 50
    assert min(psnr(full[i], light[i]) for i in range(31, 90)) > 25  # 26.8 dB 28 frames on
    assert np.array_equal(full[60], light[60])  # key frames are filtered


def test_full_decoding_comes_back_at_a_key_frame(stream: list[bytes]) -> None:
    full, _ = decode_all(stream, never)
    got, decoder = decode_all(stream, lambda i: i < 45)  # full asked for from frame 45
    assert not decoder.decoding_light
    # the first key frame: its period is not known yet, so in full; light from the second
    assert all(np.array_equal(full[i], got[i]) for i in range(31))
    assert any(not np.array_equal(full[i], got[i]) for i in range(31, 60))
    assert all(np.array_equal(full[i], got[i]) for i in range(60, 90))  # full again


def test_a_sender_with_rare_key_frames_is_decoded_in_full() -> None:
    stream = vp8_stream(120, gop=90, size=(320, 240))  # a key frame every 3 s
    full, _ = decode_all(stream, never)
    got, decoder = decode_all(stream, lambda i: True)
    assert not decoder.decoding_light
    assert all(np.array_equal(a, b) for a, b in zip(full, got, strict=True))


def test_h264_is_decoded_in_full() -> None:
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 320, 240, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 30)
    encoder.gop_size = 30
    encoder.options = {"tune": "zerolatency", "preset": "ultrafast"}
    y, x = np.mgrid[0:240, 0:320]
    stream = []
    for i in range(60):
        rgb = np.stack([(x + 3 * i) % 256, y % 256, (x // 32 + i) % 2 * 255], axis=-1)
        frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = i
        stream += [bytes(p) for p in encoder.encode(frame)]
    stream += [bytes(p) for p in encoder.encode(None)]
    assert [is_key_frame("video/h264", f) for f in stream].count(True) == 2
    full, _ = decode_all(stream, never, H264)
    got, decoder = decode_all(stream, lambda i: True, H264)
    assert not decoder.decoding_light
    assert len(got) == len(full) == len(stream)
    assert all(np.array_equal(a, b) for a, b in zip(full, got, strict=True))


def test_a_sender_keyed_by_our_plis_is_not_decoded_light() -> None:
    # lean may rely on its answers; light may not (it may stop answering, and the chain
    # decoded without the loop filter would then drift for as long as it sends no key)
    gate = DecodeGate()
    for i in range(30):
        gate.on_frame(i / 30, i == 0, math.inf, 0.5)
    gate.pli_state = "honoured"
    assert gate.keyed_often(1.0, 0.5)
    assert not gate.keys_of_its_own_often(1.0)
