"""A small Prometheus text-format registry: counters and histograms with labels.

Kept in-process and dependency-free; ``/metrics`` renders it. Names follow Prometheus
conventions (``voicebot_stage_seconds_bucket{stage="stt",le="0.5"}``).
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Callable

__all__ = ["DEFAULT_BUCKETS", "Metrics"]

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
Labels = tuple[tuple[str, str], ...]


def _fmt_labels(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    items = (*labels, *extra)
    if not items:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in items)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Thread-safe counters, histograms and callback gauges."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._help: dict[str, tuple[str, str]] = {}
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._hist: dict[str, dict[Labels, list[float]]] = defaultdict(dict)
        self._hist_sum: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._buckets: dict[str, tuple[float, ...]] = {}
        self._gauges: dict[str, Callable[[], float]] = {}

    def describe(self, name: str, kind: str, text: str) -> None:
        self._help[name] = (kind, text)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + amount

    def observe(
        self, name: str, value: float, buckets: tuple[float, ...] = DEFAULT_BUCKETS, **labels: str
    ) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._buckets.setdefault(name, buckets)
            bounds = self._buckets[name]
            counts = self._hist[name].setdefault(key, [0.0] * (len(bounds) + 1))
            counts[bisect.bisect_left(bounds, value)] += 1
            self._hist_sum[name][key] = self._hist_sum[name].get(key, 0.0) + value

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        self._gauges[name] = read

    def counter_value(self, name: str, **labels: str) -> float:
        return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def histogram_count(self, name: str, **labels: str) -> int:
        counts = self._hist.get(name, {}).get(tuple(sorted(labels.items())))
        return int(sum(counts)) if counts else 0

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, series in sorted(self._counters.items()):
                self._header(lines, name, "counter")
                for labels, value in sorted(series.items()):
                    lines.append(f"{name}{_fmt_labels(labels)} {value:g}")
            for name, hseries in sorted(self._hist.items()):
                self._header(lines, name, "histogram")
                bounds = self._buckets[name]
                for labels, counts in sorted(hseries.items()):
                    running = 0.0
                    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
                        running += count
                        le = "+Inf" if bound == float("inf") else f"{bound:g}"
                        lines.append(
                            f"{name}_bucket{_fmt_labels(labels, (('le', le),))} {running:g}"
                        )
                    lines.append(
                        f"{name}_sum{_fmt_labels(labels)} {self._hist_sum[name][labels]:g}"
                    )
                    lines.append(f"{name}_count{_fmt_labels(labels)} {running:g}")
        for name, read in sorted(self._gauges.items()):
            self._header(lines, name, "gauge")
            lines.append(f"{name} {read():g}")
        return "\n".join(lines) + "\n"

    def _header(self, lines: list[str], name: str, kind: str) -> None:
        _, text = self._help.get(name, (kind, name.replace("_", " ")))
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
