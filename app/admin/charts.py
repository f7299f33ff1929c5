"""Geometry of the SVG bar charts of the back office; the templates draw them (no JavaScript,
no CDN)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from app.services.operations_overview import Bar


@dataclass
class ChartBar:
    x: float
    y: float
    width: float
    height: float
    count: int
    title: str


@dataclass
class Chart:
    width: int
    height: int
    plot_top: int
    plot_bottom: int
    plot_left: int
    max_count: int
    total: int
    bars: list[ChartBar]
    ticks: list[tuple[float, str]]  # x, label
    grid: list[tuple[float, str]]  # y, label


def bar_chart(bars: list[Bar], label: Callable[[datetime], str], tick_every: int,
              width: int = 640, height: int = 170) -> Chart:
    """Geometry of an SVG bar chart; the template draws it (no JavaScript, no CDN)."""
    left, right, top, bottom = 36, 8, 10, height - 22
    max_count = max((b.count for b in bars), default=0)
    scale_max = max(max_count, 1)
    slot = (width - left - right) / max(len(bars), 1)
    chart_bars, ticks = [], []
    for i, bar in enumerate(bars):
        h = (bottom - top) * bar.count / scale_max
        x = left + i * slot
        chart_bars.append(ChartBar(x=round(x + slot * 0.1, 2), y=round(bottom - h, 2),
                                   width=round(max(slot * 0.8, 1), 2), height=round(h, 2), count=bar.count,
                                   title=f"{label(bar.start)}: {bar.count}"))
        if i % tick_every == 0:
            ticks.append((round(x + slot / 2, 2), label(bar.start)))
    grid = [(float(bottom), "0")] + ([(float(top), str(max_count))] if max_count else [])
    return Chart(width=width, height=height, plot_top=top, plot_bottom=bottom, plot_left=left,
                 max_count=max_count, total=sum(b.count for b in bars), bars=chart_bars, ticks=ticks, grid=grid)
