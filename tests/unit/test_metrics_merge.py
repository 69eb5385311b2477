"""The front's merged /metrics: real prometheus_client output from two 'workers'."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from omni_rtc.workers.metrics_merge import merge


def worker_text(calls: int, active: int, waits: list[float], started: float) -> str:
    registry = CollectorRegistry()
    counter = Counter("demo_calls", "Calls taken.", ["transport"], registry=registry)
    gauge = Gauge("demo_active", "Calls now.", registry=registry)
    histogram = Histogram("demo_wait_seconds", "Waits.", buckets=(0.1, 1.0), registry=registry)
    start = Gauge("process_start_time_seconds", "Start.", registry=registry)
    counter.labels("webrtc").inc(calls)
    gauge.set(active)
    for wait in waits:
        histogram.observe(wait)
    start.set(started)
    return generate_latest(registry).decode()


def test_sums_series_and_leaves_out_creation_times_and_their_families() -> None:
    first = worker_text(3, 2, [0.05, 0.5], 1000.0)
    second = worker_text(4, 1, [2.0], 900.0)
    assert "demo_calls_created" in first  # prometheus_client writes them: the case at hand
    merged = merge([first, second])
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(merged)
        for s in family.samples
    }
    assert samples[("demo_calls_total", (("transport", "webrtc"),))] == 7
    assert samples[("demo_active", ())] == 3
    assert samples[("demo_wait_seconds_bucket", (("le", "0.1"),))] == 1
    assert samples[("demo_wait_seconds_bucket", (("le", "1.0"),))] == 2
    assert samples[("demo_wait_seconds_bucket", (("le", "+Inf"),))] == 3
    assert samples[("demo_wait_seconds_count", ())] == 3
    assert samples[("demo_wait_seconds_sum", ())] == 2.55
    assert samples[("process_start_time_seconds", ())] == 900.0
    assert "_created" not in merged
    lines = [*merged.splitlines(), "# end"]
    headers = [i for i, line in enumerate(lines) if line.startswith("# TYPE")]
    empty = [lines[i] for i in headers if lines[i + 1].startswith("#")]
    assert empty == []  # every family header is followed by its samples


def test_a_family_without_samples_keeps_its_header() -> None:
    registry = CollectorRegistry()
    Counter("demo_refused", "Calls refused.", ["reason"], registry=registry)
    merged = merge([generate_latest(registry).decode()] * 2)
    assert merged.splitlines() == [
        "# HELP demo_refused_total Calls refused.",
        "# TYPE demo_refused_total counter",
    ]
