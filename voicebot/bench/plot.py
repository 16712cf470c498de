"""The latency-vs-concurrency PNG, drawn with numpy + zlib (``voicebot.chart``)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from voicebot.chart import Canvas, Color

__all__ = ["plot_png", "with_plot"]


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10 ** np.floor(np.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return float(step * exp)
    return float(10 * exp)


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float]
    color: Color


def _panel(
    canvas: Canvas,
    box: tuple[int, int, int, int],
    title: str,
    levels: Sequence[int],
    series: Sequence[Series],
    unit: str,
) -> None:
    x0, y0, x1, y1 = box  # plot area
    canvas.text(x0, y0 - 44, title, scale=2)
    top = _nice_max(max((v for s in series for v in s.values), default=1.0))
    for i in range(5):  # y grid + labels
        y = y1 - (y1 - y0) * i / 4
        canvas.rect(x0, round(y), x1, round(y) + 1, (225, 225, 225))
        label = f"{top * i / 4:g}"
        canvas.text(x0 - 8 - 8 * len(label), round(y) - 5, label, (60, 60, 60))
    canvas.rect(x0, y0, x0 + 2, y1, (0, 0, 0))
    canvas.rect(x0, y1, x1, y1 + 2, (0, 0, 0))
    canvas.text(x0 - 40, y0 - 20, unit, (60, 60, 60))

    def xpos(i: int) -> float:
        return x0 + 30 + (x1 - x0 - 60) * (i / max(1, len(levels) - 1))

    for i, level in enumerate(levels):
        label = str(level)
        canvas.text(round(xpos(i)) - 4 * len(label), y1 + 10, label, (60, 60, 60))
    canvas.text((x0 + x1) // 2 - 64, y1 + 32, "CONCURRENT", (60, 60, 60))
    for k, s in enumerate(series):
        points = [(xpos(i), y1 - (y1 - y0) * v / top) for i, v in enumerate(s.values)]
        for (ax, ay), (bx, by) in itertools.pairwise(points):
            canvas.line(ax, ay, bx, by, s.color, 3)
        for px, py in points:
            canvas.rect(round(px) - 4, round(py) - 4, round(px) + 5, round(py) + 5, s.color)
        canvas.rect(x0 + 12, y0 + 10 + 20 * k, x0 + 28, y0 + 22 + 20 * k, s.color)
        canvas.text(x0 + 36, y0 + 11 + 20 * k, s.name, s.color)


def plot_png(concurrency: dict[str, Any]) -> bytes:
    """Latency vs concurrency (voice turns, questions) as a PNG, drawn with numpy + zlib."""
    canvas = Canvas(1000, 440)
    blue, orange = (31, 119, 180), (230, 120, 20)
    voice = concurrency.get("voice_turns", [])
    asks = concurrency.get("asks", [])
    if voice:
        _panel(
            canvas,
            (90, 80, 470, 360),
            "VOICE TURNS AT ONCE",
            [v["concurrent"] for v in voice],
            [
                Series("P50", [v["p50_s"] for v in voice], blue),
                Series("MAX", [v["max_s"] for v in voice], orange),
            ],
            "S",
        )
    if asks:
        _panel(
            canvas,
            (590, 80, 970, 360),
            "QUESTIONS AT ONCE (TEXT)",
            [v["concurrent"] for v in asks],
            [
                Series("P50", [v["p50_ms"] for v in asks], blue),
                Series("P95", [v["p95_ms"] for v in asks], orange),
            ],
            "MS",
        )
    return canvas.png()


def with_plot(result: dict[str, Any]) -> bytes | None:
    conc = result["sections"].get("concurrency", {})
    if conc.get("status") != "measured":
        return None
    return plot_png(conc)
