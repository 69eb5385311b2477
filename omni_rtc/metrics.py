"""Prometheus metrics for calls, upstream sessions and media (one registry per server).

Call counters carry a ``transport`` label (webrtc, whip, sip, twilio, telnyx, plivo, pipe).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

TRANSPORTS = ("webrtc", "whip", "sip", "twilio", "telnyx", "plivo", "pipe")
LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.calls_active = Gauge(
            "omni_rtc_calls_active", "Calls in progress", ["transport"], registry=r
        )
        self.calls_total = Counter("omni_rtc_calls", "Calls accepted", ["transport"], registry=r)
        self.calls_failed = Counter(
            "omni_rtc_calls_failed",
            "Calls refused or ended by a failure, by transport and reason",
            ["transport", "reason"],
            registry=r,
        )
        self.calls_ended = Counter(
            "omni_rtc_calls_ended",
            "Calls ended, by transport and reason",
            ["transport", "reason"],
            registry=r,
        )
        self.call_duration = Histogram(
            "omni_rtc_call_duration_seconds",
            "Length of ended calls",
            buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
            registry=r,
        )
        self.upstream_connect = Histogram(
            "omni_rtc_upstream_connect_seconds",
            "Time to open a realtime session (socket + session.updated)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0),
            registry=r,
        )
        self.reply_latency = Histogram(
            "omni_rtc_reply_latency_seconds",
            "From the end of the user's turn (server VAD speech_stopped, or push-to-talk "
            "release) to the first reply audio handed to the caller's track",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.barge_ins = Counter(
            "omni_rtc_barge_ins", "Replies interrupted by the caller speaking", registry=r
        )
        self.reply_underruns = Counter(
            "omni_rtc_reply_underruns",
            "20 ms reply frames padded with silence in the middle of a reply",
            registry=r,
        )
        self.reply_caught_up = Counter(
            "omni_rtc_reply_caught_up_seconds",
            "Quiet reply audio skipped to shed the delay that late deltas left in a reply "
            "streamed at real time",
            registry=r,
        )
        self.images_sent = Counter(
            "omni_rtc_images_sent", "Camera JPEGs sent to the model", registry=r
        )
        self.bytes = Counter(
            "omni_rtc_media_bytes",
            "Media bytes exchanged with the realtime service (pcm16 and JPEG, before base64)",
            ["direction"],
            registry=r,
        )
        self.upstream_rollovers = Counter(
            "omni_rtc_upstream_rollovers",
            "Realtime sessions renewed mid-call after the service's idle or duration limit",
            registry=r,
        )
        self.dtmf_digits = Counter(
            "omni_rtc_dtmf_digits",
            "Keypad digits callers pressed (RFC 4733 or media-stream events)",
            ["transport"],
            registry=r,
        )
        self.upstream_reconnects = Counter(
            "omni_rtc_upstream_reconnects",
            "Realtime sessions replaced mid-call after the connection dropped or went silent",
            registry=r,
        )
        self.upstream_errors = Counter(
            "omni_rtc_upstream_errors", "Error events from the realtime service", registry=r
        )

        # leaks show here first: RSS and fds (process_*), native threads, asyncio tasks
        ProcessCollector(registry=r)
        Gauge(
            "omni_rtc_threads", "OS threads of this process (codec threads included)", registry=r
        ).set_function(_thread_count)
        Gauge("omni_rtc_asyncio_tasks", "Live asyncio tasks", registry=r).set_function(_task_count)
        self._overloaded = Gauge(
            "omni_rtc_overloaded",
            "1 while this process refuses new calls because its event loop has no time for "
            "them (--max-loop-busy; summed over workers: how many do)",
            registry=r,
        )
        self._video_lean = Gauge(
            "omni_rtc_video_lean",
            "The share of this process's calls whose cameras are decoded at key frames only "
            "(fewer images) because its event loop is nearly full, 0..1 (summed over workers)",
            registry=r,
        )
        self._video_light = Gauge(
            "omni_rtc_video_light",
            "1 while this process decodes cameras without the loop filter (every image, a "
            "little less sharp) because its event loop is busy (summed over workers)",
            registry=r,
        )
        for transport in TRANSPORTS:  # every series exists from the start, at 0
            self.calls_active.labels(transport)
            self.calls_total.labels(transport)
            self.dtmf_digits.labels(transport)

    def watch_overload(
        self,
        refusing: Callable[[], bool],
        lean: Callable[[], float],
        light: Callable[[], bool],
    ) -> None:
        """Export whether this process refuses calls, and how much camera work it sheds,
        for lack of event-loop time."""
        self._overloaded.set_function(lambda: float(refusing()))
        self._video_lean.set_function(lambda: float(lean()))
        self._video_light.set_function(lambda: float(light()))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _thread_count() -> float:
    try:
        return float(len(os.listdir("/proc/self/task")))
    except OSError:  # not Linux
        import threading

        return float(threading.active_count())


def _task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # scraped outside the event loop
        return 0.0
