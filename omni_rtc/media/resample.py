"""Audio resampling on a single-threaded FFmpeg filter graph.

PyAV's ``AudioResampler`` builds its filter graph with FFmpeg's default thread count:
one worker thread per CPU for every resampler, i.e. every stream of every call (two per
call on 2 cores, 64 on a 64-core server), and those threads live until the resampler
is garbage-collected.  Resampling a mono voice stream gains nothing from threads, so
:class:`Resampler` does the same work (the same ``abuffer -> aformat -> abuffersink``
graph, hence the same output) with ``threads = 1``; :func:`use_in_aiortc` makes
aiortc's Opus and G.711 encoders use it too.
"""

from __future__ import annotations

import logging
from errno import EAGAIN
from typing import Any

import av
import av.filter

log = logging.getLogger("omni_rtc.media")


class Resampler:
    """Drop-in for ``av.AudioResampler(format, layout, rate, frame_size)``."""

    def __init__(
        self,
        format: str | None = None,
        layout: str | None = None,
        rate: int | None = None,
        frame_size: int | None = None,
    ) -> None:
        self.format = format
        self.layout = layout
        self.rate = rate
        self.frame_size = frame_size or 0
        self._graph: av.filter.Graph | None = None
        self._passthrough = False
        self._template: tuple[str, str, int] | None = None
        self._pushes = 0

    def resample(self, frame: av.AudioFrame | None) -> list[av.AudioFrame]:
        if self._graph is None and frame is None:
            return []
        if self._passthrough:
            return [frame] if frame is not None else []
        if self._graph is None:
            assert frame is not None
            if self._setup(frame):
                return [frame]
        assert self._graph is not None
        if frame is not None:
            signature = (frame.format.name, frame.layout.name, frame.sample_rate)
            if signature != self._template:
                raise ValueError("Frame does not match Resampler setup.")
        self._graph.push(frame)
        self._pushes += 1
        out: list[av.AudioFrame] = []
        while True:
            try:
                pulled = self._graph.pull()
            except EOFError:
                break
            except av.FFmpegError as exc:
                if exc.errno != EAGAIN:
                    raise
                break
            assert isinstance(pulled, av.AudioFrame)
            out.append(pulled)
            if not self.frame_size and frame is not None and self._pushes % 50:
                # aformat turns one frame into at most one: asking again would only
                # raise EAGAIN, which costs PyAV more than the resampling itself (once a
                # second we do ask, so nothing could ever pile up in the sink)
                break
        return out

    def _setup(self, frame: av.AudioFrame) -> bool:
        """Build the graph from the first frame; True when no conversion is needed."""
        fmt = self.format or frame.format.name
        layout = self.layout or frame.layout.name
        rate = self.rate or frame.sample_rate
        self._template = (frame.format.name, frame.layout.name, frame.sample_rate)
        if (fmt, layout, rate) == self._template and not self.frame_size:
            self._passthrough = True
            return True
        graph = av.filter.Graph()
        graph.threads = 1  # must precede the filters
        extra: dict[str, Any] = {}
        if frame.time_base is not None:
            extra["time_base"] = str(frame.time_base)
        source = graph.add(
            "abuffer",
            sample_rate=str(frame.sample_rate),
            sample_fmt=frame.format.name,
            channel_layout=frame.layout.name,
            **extra,
        )
        convert = graph.add(
            "aformat", sample_rates=str(rate), sample_fmts=fmt, channel_layouts=layout
        )
        sink = graph.add("abuffersink")
        source.link_to(convert)
        convert.link_to(sink)
        graph.configure()
        if self.frame_size:
            graph.set_audio_frame_size(self.frame_size)
        self._graph = graph
        return False


def use_in_aiortc() -> bool:
    """Make aiortc's audio encoders resample single-threaded (idempotent, guarded)."""
    patched = False
    for name in ("aiortc.codecs.opus", "aiortc.codecs.g711"):
        try:
            module = __import__(name, fromlist=["AudioResampler"])
        except ImportError:
            continue
        if getattr(module, "AudioResampler", None) is av.AudioResampler:
            setattr(module, "AudioResampler", Resampler)  # noqa: B010
            patched = True
        elif getattr(module, "AudioResampler", None) is not Resampler:
            log.warning("%s has no AudioResampler to replace; its encoder may spawn threads", name)
    return patched
