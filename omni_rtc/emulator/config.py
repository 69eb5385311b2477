"""Settings of the emulated realtime service (behaviour and fault knobs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..realtime.profiles import DASHSCOPE

INPUT_RATE = DASHSCOPE.input_rate
OUTPUT_RATE = DASHSCOPE.output_rate


@dataclass
class EmulatorConfig:
    api_key: str | None = None
    """When set, connections must present ``Authorization: Bearer <api_key>``."""
    reject_auth: bool = False
    """Fault: refuse every connection with 401."""
    reply: Literal["echo", "tone", "live"] = "echo"
    """``echo`` plays back the user's last utterance; ``tone`` a sine of ``tone_seconds``;
    ``live`` returns every appended chunk at once as an audio delta, without VAD (a
    latency probe for benchmarks, not a conversation)."""
    tone_seconds: float = 3.0
    tone_hz: float = 440.0
    reply_speed: float = 4.0
    """Reply audio is sent this many times faster than real time, in bursts."""
    chunk_ms: int = 100
    burst_chunks: int = 4
    reply_delay_s: float = 0.2
    """Model 'thinking' time before the first delta (fault knob: make it large)."""
    max_echo_s: float = 30.0
    idle_timeout_s: float = 300.0
    max_session_s: float = 7200.0
    max_image_bytes: int = 500_000
    min_commit_ms: int | None = None
    """Shortest committable buffer; default 1000 ms for qwen3.5 models, else any audio."""
    drop_after_s: float | None = None
    """Fault: abort the TCP connection this long after it opens."""
    drop_mid_reply: bool = False
    """Fault: abort the TCP connection halfway through the first reply's audio."""
    partition_after_s: float | None = None
    """Fault: after this long the connection goes silent without closing (a network
    partition): nothing is sent, nothing is read, pings go unanswered."""
    fault_sessions: int | None = None
    """Inject the faults above into the first N sessions only (None: every session)."""
    done_after_cancel: bool = True
    """Send ``response.done`` (status cancelled) after a cancel; some models don't."""
    record_seconds: float = 120.0
    """How much of each session's input audio (and events) :class:`SessionRecord` keeps."""
    keep_sessions: int = 1000
    """How many session records the emulator keeps (the oldest go first)."""
