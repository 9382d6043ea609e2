"""SVG charts drawn from plain values: line, bars and heatmap."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cinema.report.text import (
    DASH,
    WEEKDAYS,
    escape,
    hours,
    shorten,
)

# The heatmap's scale, from an empty hour to the busiest (the accent's tints).
HEAT_COLD = (238, 240, 255)
HEAT_HOT = (55, 48, 163)


def _n(value: float) -> str:
    """An SVG coordinate."""
    return f"{value:.1f}".removesuffix(".0")


def nice_axis(maximum: float, ticks: int = 4) -> list[float]:
    """Round tick values from 0 to just above `maximum`."""
    if maximum <= 0:
        return [0.0, 1.0]
    raw_step = maximum / ticks
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw_step)
    return [i * step for i in range(math.ceil(maximum / step - 1e-9) + 1)]


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    tooltip: str


def line_chart(
    name: str,
    points: Sequence[Point],
    *,
    width: float,
    height: float,
    x_domain: tuple[float, float],
    x_ticks: Sequence[tuple[float, str]],
    y_ticks: Sequence[float],
    y_label: Callable[[float], str],
    start: tuple[float, float] | None = None,
    annotation: tuple[Point, str] | None = None,
) -> str:
    """A line over a shaded area; each point is a mark with its tooltip."""
    left, right, top, bottom = 52.0, 16.0, 14.0, 30.0
    x0, x1 = x_domain
    y_top = y_ticks[-1]

    def sx(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * (width - left - right)

    def sy(y: float) -> float:
        return top + (1 - y / y_top) * (height - top - bottom)

    parts = [_svg_open(name, width, height)]
    for tick in y_ticks:
        parts.append(
            f'<line class="grid" x1="{_n(left)}" x2="{_n(width - right)}" y1="{_n(sy(tick))}" y2="{_n(sy(tick))}"/>'
            f'<text class="tick" x="{_n(left - 8)}" y="{_n(sy(tick) + 4)}" text-anchor="end">'
            f"{escape(y_label(tick))}</text>"
        )
    for x, label in x_ticks:
        parts.append(
            f'<text class="tick" x="{_n(sx(x))}" y="{_n(height - 8)}" text-anchor="middle">{escape(label)}</text>'
        )
    line = [(sx(x), sy(y)) for x, y in ([start] if start else [])] + [(sx(p.x), sy(p.y)) for p in points]
    path = " ".join(f"{'M' if i == 0 else 'L'}{_n(x)},{_n(y)}" for i, (x, y) in enumerate(line))
    baseline = sy(0)
    parts.append(
        f'<path class="area" d="{path} L{_n(line[-1][0])},{_n(baseline)} L{_n(line[0][0])},{_n(baseline)} Z"/>'
    )
    parts.append(f'<path class="line" d="{path}"/>')
    if annotation:
        point, text = annotation
        x, y = sx(point.x), sy(point.y)
        parts.append(
            f'<line class="guide" x1="{_n(x)}" x2="{_n(x)}" y1="{_n(y)}" y2="{_n(baseline)}"/>'
            f'<text class="annotation" x="{_n(x - 8)}" y="{_n((y + baseline) / 2 + 4)}" '
            f'text-anchor="end">{escape(text)}</text>'
        )
    dense = len(points) > 40
    for point in points:
        parts.append(
            f'<circle class="mark{" dense" if dense else ""}" r="{2.2 if dense else 3.5}" '
            f'cx="{_n(sx(point.x))}" cy="{_n(sy(point.y))}" '
            f'data-value="{point.y!r}"><title>{escape(point.tooltip)}</title></circle>'
        )
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class Bar:
    label: str
    detail: str
    value: float
    value_text: str
    tooltip: str


BAR_ROW = 46.0


def bar_chart_height(bars: int) -> float:
    return 4 + BAR_ROW * bars


def bar_chart(name: str, bars: Sequence[Bar], *, width: float, label_room: int = 64) -> str:
    """Horizontal bars, each under its label and details, largest first."""
    value_room = 72.0
    height = bar_chart_height(len(bars))
    maximum = max((bar.value for bar in bars), default=0) or 1
    parts = [_svg_open(name, width, height)]
    for i, bar in enumerate(bars):
        y = 4 + i * BAR_ROW
        # Label and details share one line: a long title gives way, never the details.
        label = shorten(bar.label, max(16, label_room - len(bar.detail)))
        length = max(2.0, bar.value / maximum * (width - value_room))
        parts.append(
            f'<text class="label" x="0" y="{_n(y + 14)}">{escape(label)}'
            f'<tspan class="detail" dx="8">{escape(bar.detail)}</tspan></text>'
            f'<rect class="track" x="0" y="{_n(y + 22)}" width="{_n(width - value_room)}" height="12" rx="6"/>'
            f'<rect class="mark bar" x="0" y="{_n(y + 22)}" width="{_n(length)}" height="12" rx="6" '
            f'data-value="{bar.value!r}"><title>{escape(bar.tooltip)}</title></rect>'
            f'<text class="value" x="{_n(width)}" y="{_n(y + 32)}" text-anchor="end">{escape(bar.value_text)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def heatmap_chart(name: str, minutes: Sequence[Sequence[float]], *, width: float) -> str:
    """Weekday rows by hour columns, shaded from an idle hour to the busiest."""
    left, top, gap, cell_height = 40.0, 22.0, 3.0, 28.0
    cell_width = (width - left) / 24 - gap
    height = top + len(minutes) * (cell_height + gap) + 34
    busiest = max(max(row) for row in minutes) or 1
    parts = [_svg_open(name, width, height)]
    for hour in range(0, 24, 3):
        x = left + hour * (cell_width + gap)
        parts.append(f'<text class="tick" x="{_n(x)}" y="12">{hour:02d}:00</text>')
    for weekday, row in enumerate(minutes):
        y = top + weekday * (cell_height + gap)
        parts.append(f'<text class="tick" x="0" y="{_n(y + cell_height / 2 + 4)}">{WEEKDAYS[weekday]}</text>')
        for hour, value in enumerate(row):
            tooltip = f"{WEEKDAYS[weekday]} {hour:02d}:00{DASH}{(hour + 1) % 24:02d}:00: {hours(value / 60)} watched"
            parts.append(
                f'<rect class="mark cell" x="{_n(left + hour * (cell_width + gap))}" y="{_n(y)}" '
                f'width="{_n(cell_width)}" height="{_n(cell_height)}" rx="4" fill="{heat_colour(value / busiest)}" '
                f'data-value="{value!r}"><title>{escape(tooltip)}</title></rect>'
            )
    legend_y = height - 14
    swatch = 22.0
    parts.append(
        f'<text class="tick" x="{_n(width - 6 * swatch - 50)}" y="{_n(legend_y + 10)}" text-anchor="end">less</text>'
    )
    for step in range(5):
        x = width - (5 - step) * swatch - 40
        parts.append(
            f'<rect x="{_n(x)}" y="{_n(legend_y)}" width="{_n(swatch - 3)}" height="12" rx="3" '
            f'fill="{heat_colour(step / 4)}"/>'
        )
    parts.append(f'<text class="tick" x="{_n(width - 34)}" y="{_n(legend_y + 10)}">more</text>')
    parts.append("</svg>")
    return "".join(parts)


def heat_colour(share: float) -> str:
    # A square root spreads the quiet hours apart, which a linear scale would all paint alike.
    t = math.sqrt(max(0.0, min(1.0, share)))
    red, green, blue = (round(cold + (hot - cold) * t) for cold, hot in zip(HEAT_COLD, HEAT_HOT, strict=True))
    return f"#{red:02x}{green:02x}{blue:02x}"


def _svg_open(name: str, width: float, height: float) -> str:
    return (
        f'<svg class="chart" data-chart="{escape(name)}" viewBox="0 0 {_n(width)} {_n(height)}" '
        f'role="img" preserveAspectRatio="xMinYMin meet">'
    )
