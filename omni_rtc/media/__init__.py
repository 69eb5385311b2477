"""Media converters between aiortc tracks and the realtime session."""

DEFAULT_CHUNK_MS = 40
"""Caller audio per append (``--chunk-ms``).  Half the upstream messages of 20 ms chunks:
in peer-bench 14% less CPU per A/V call at one call and 7% at four (about half of that
because its echo upstream then also answers in 40 ms deltas), for +10 ms on average
(+20 at most) before the model hears an onset.  Here, not in ``audio_in``, so that the
CLI's option table does not import PyAV."""
