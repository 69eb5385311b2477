"""One /metrics for all processes: the workers' series summed, label set by label set.

Counters, gauges and histogram buckets add up across processes; the process start time
takes the earliest; ``*_created`` timestamps (optional in the text format) are left out,
and with them the gauge families prometheus_client writes them as.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families

EARLIEST = ("process_start_time_seconds",)


def merge(texts: Iterable[str]) -> str:
    families: dict[str, tuple[str, str]] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            samples = [s for s in family.samples if not s.name.endswith("_created")]
            if family.samples and not samples:
                continue  # a family of creation times only: nothing to add up
            families.setdefault(family.name, (family.type, family.documentation))
            series = values.setdefault(family.name, {})
            for sample in samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if sample.name.endswith(EARLIEST):
                    series[key] = min(series.get(key, math.inf), sample.value)
                else:
                    series[key] = series.get(key, 0.0) + sample.value
    lines: list[str] = []
    for name, (kind, doc) in families.items():
        shown = f"{name}_total" if kind == "counter" else name  # as prometheus_client does
        lines.append(f"# HELP {shown} {_escape_help(doc)}")
        lines.append(f"# TYPE {shown} {kind}")
        for (sample_name, labels), value in values[name].items():
            rendered = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
            line = f"{sample_name}{{{rendered}}}" if labels else sample_name
            lines.append(f"{line} {_number(value)}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else ("+Inf" if value > 0 else "NaN")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
