import numpy as np

from omni_rtc.emulator.vad import EnergyVad, threshold_to_dbfs

RATE = 16_000


def tone(seconds: float, amplitude: float) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * 300 * t) * 32767).astype("<i2").tobytes()


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * RATE) * 2)


def test_detects_start_with_prefix_padding_and_stop_after_silence() -> None:
    vad = EnergyVad(sample_rate=RATE, threshold=0.5, prefix_padding_ms=300, silence_duration_ms=800)
    events = vad.feed(silence(1.0) + tone(1.5, 0.3) + silence(1.0))
    assert [e.kind for e in events] == ["start", "stop"]
    start, stop = events
    assert abs(start.ms - (1000 - 300)) <= 20
    assert abs(stop.ms - 2500) <= 20


def test_silence_shorter_than_setting_does_not_end_speech() -> None:
    vad = EnergyVad(sample_rate=RATE, silence_duration_ms=800)
    events = vad.feed(tone(0.5, 0.3) + silence(0.5) + tone(0.5, 0.3) + silence(0.9))
    assert [e.kind for e in events] == ["start", "stop"]


def test_threshold_controls_sensitivity() -> None:
    quiet = silence(0.2) + tone(0.5, 0.01) + silence(1.0)  # about -43 dBFS RMS
    assert EnergyVad(sample_rate=RATE, threshold=0.5).feed(quiet) == []
    assert [e.kind for e in EnergyVad(sample_rate=RATE, threshold=-0.5).feed(quiet)] == [
        "start",
        "stop",
    ]
    assert threshold_to_dbfs(-1) < threshold_to_dbfs(0) < threshold_to_dbfs(1)


def test_feeding_in_odd_chunks_gives_the_same_result() -> None:
    pcm = silence(0.4) + tone(0.6, 0.3) + silence(1.0)
    whole = EnergyVad(sample_rate=RATE).feed(pcm)
    vad = EnergyVad(sample_rate=RATE)
    pieces = []
    for i in range(0, len(pcm), 998):
        pieces += vad.feed(pcm[i : i + 998])
    assert pieces == whole
