"""`python -m scripts.draw_freshness`: raw freshness against offered rate, from build/bench.json.

Reads the capacity steps `make bench` (or `make bench-quick`) wrote under
`figures.capacity` (`offered_<rate>_freshness_p50_seconds` ...) and draws
pictures/freshness.svg: p50, p95 and p99 per offered rate (a doubling scale), the
1 s goal, and which steps were sustained. A plain SVG of our own: no plotting library.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import click

from cinema.paths import PROJECT_ROOT

BENCH_JSON = PROJECT_ROOT / "build" / "bench.json"
PICTURE = PROJECT_ROOT / "pictures" / "freshness.svg"
QUANTILES = (("p50", "#93c5fd"), ("p95", "#3b82f6"), ("p99", "#1e3a8a"))
WIDTH, HEIGHT = 640.0, 364.0
LEFT, RIGHT, TOP, BOTTOM = 64.0, 150.0, 40.0, 72.0
LABEL_SPACING = 56.0
STEP = re.compile(r"offered_(\d+)_freshness_(p50|p95|p99)_seconds")


def steps(capacity: dict[str, float]) -> dict[int, dict[str, float]]:
    """{offered rate: {quantile: seconds, "sustained": 0/1}} from the capacity figures."""
    found: dict[int, dict[str, float]] = {}
    for key, value in capacity.items():
        if match := STEP.fullmatch(key):
            found.setdefault(int(match.group(1)), {})[match.group(2)] = value
    for rate, values in found.items():
        values["sustained"] = capacity.get(f"offered_{rate}_sustained", 0.0)
    return dict(sorted(found.items()))


def _k(rate: int) -> str:
    return f"{rate / 1000:g}k" if rate >= 1000 else str(rate)


def _n(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def draw(capacity: dict[str, float], measured_at: str) -> str:
    by_rate = steps(capacity)
    if not by_rate:
        raise click.ClickException("build/bench.json has no capacity steps: run `make bench-quick` first")
    rates = list(by_rate)
    worst = max(value for step in by_rate.values() for name, value in step.items() if name != "sustained")
    y_top = max(2.0, math.ceil(worst * 1.1))
    low, high = math.log2(rates[0]), math.log2(rates[-1])

    def sx(rate: float) -> float:
        share = 0.5 if high == low else (math.log2(rate) - low) / (high - low)
        return LEFT + share * (WIDTH - LEFT - RIGHT)

    def sy(seconds: float) -> float:
        return TOP + (1 - min(seconds, y_top) / y_top) * (HEIGHT - TOP - BOTTOM)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(WIDTH)}" height="{_n(HEIGHT)}" '
        f'viewBox="0 0 {_n(WIDTH)} {_n(HEIGHT)}" font-family="sans-serif" font-size="11">',
        f'<rect width="{_n(WIDTH)}" height="{_n(HEIGHT)}" fill="white"/>',
        f'<text x="{_n(LEFT)}" y="20" font-size="13" font-weight="bold">Raw freshness against offered rate</text>',
        f'<text x="{_n(LEFT)}" y="33" fill="#555">'
        f"publisher insert → visible in ClickHouse; capacity {capacity.get('sustained_events_per_second', 0):,.0f} "
        f"events/s; make bench, {measured_at}</text>",
    ]
    ticks = 4
    for tick in range(ticks + 1):
        seconds = y_top * tick / ticks
        parts.append(
            f'<line x1="{_n(LEFT)}" x2="{_n(WIDTH - RIGHT)}" y1="{_n(sy(seconds))}" y2="{_n(sy(seconds))}" '
            'stroke="#e5e7eb"/>'
            f'<text x="{_n(LEFT - 6)}" y="{_n(sy(seconds) + 4)}" text-anchor="end">{_n(seconds)} s</text>'
        )
    goal = sy(1.0)
    parts.append(
        f'<line x1="{_n(LEFT)}" x2="{_n(WIDTH - RIGHT)}" y1="{_n(goal)}" y2="{_n(goal)}" stroke="#dc2626" '
        'stroke-dasharray="5 4"/>'
        f'<text x="{_n(WIDTH - RIGHT + 6)}" y="{_n(goal + 4)}" fill="#dc2626">goal: p99 ≤ 1 s</text>'
    )
    # Bisected rates lie close together: a label too near the previous one goes a row lower.
    previous_x, lowered = -LABEL_SPACING, False
    for rate, step in by_rate.items():
        mark = "sustained" if step["sustained"] else "not sustained"
        lowered = sx(rate) - previous_x < LABEL_SPACING and not lowered
        previous_x = sx(rate)
        y = HEIGHT - BOTTOM + (16 + 2 * 13 if lowered else 16)
        parts.append(
            f'<line x1="{_n(sx(rate))}" x2="{_n(sx(rate))}" y1="{_n(HEIGHT - BOTTOM)}" y2="{_n(y - 10)}" '
            'stroke="#9ca3af"/>'
            f'<text x="{_n(sx(rate))}" y="{_n(y)}" text-anchor="middle">{_k(rate)}</text>'
            f'<text x="{_n(sx(rate))}" y="{_n(y + 12)}" text-anchor="middle" '
            f'fill="{"#15803d" if step["sustained"] else "#b91c1c"}" font-size="9">{mark}</text>'
        )
    parts.append(
        f'<text x="{_n((LEFT + WIDTH - RIGHT) / 2)}" y="{_n(HEIGHT - 6)}" text-anchor="middle" fill="#555">'
        "offered events/s</text>"
    )
    for row, (name, colour) in enumerate(QUANTILES):
        points = [(sx(rate), sy(step[name])) for rate, step in by_rate.items() if name in step]
        path = " ".join(f"{'M' if i == 0 else 'L'}{_n(x)},{_n(y)}" for i, (x, y) in enumerate(points))
        parts.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2.5"/>')
        parts += [f'<circle cx="{_n(x)}" cy="{_n(y)}" r="3.5" fill="{colour}"/>' for x, y in points]
        legend_y = TOP + 10 + row * 18
        parts.append(
            f'<line x1="{_n(WIDTH - RIGHT + 6)}" x2="{_n(WIDTH - RIGHT + 26)}" y1="{_n(legend_y + 40)}" '
            f'y2="{_n(legend_y + 40)}" stroke="{colour}" stroke-width="2.5"/>'
            f'<text x="{_n(WIDTH - RIGHT + 32)}" y="{_n(legend_y + 44)}">{name}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


@click.command()
@click.option("--bench", "bench_json", type=click.Path(exists=True, path_type=Path), default=BENCH_JSON)
@click.option("--output", type=click.Path(path_type=Path), default=PICTURE, show_default=True)
def main(bench_json: Path, output: Path) -> None:
    """Draw pictures/freshness.svg from a bench result."""
    result = json.loads(bench_json.read_text())
    output.write_text(draw(result["figures"]["capacity"], result["measured_at"]), encoding="utf-8")
    click.echo(f"{bench_json} -> {output}")


if __name__ == "__main__":
    main()
