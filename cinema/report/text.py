"""Numbers and text for people; every text that comes from the data goes through `escape()`."""

from __future__ import annotations

import html
from datetime import date

DASH = "\N{EN DASH}"
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def count(value: int) -> str:
    return f"{value:,}"


def hours(value: float) -> str:
    return f"{value:,.0f} h" if value >= 100 else f"{value:,.1f} h"


def percent(ratio: float, digits: int = 1) -> str:
    return f"{ratio * 100:.{digits}f}%"


def axis_number(value: float) -> str:
    """Axis labels: 0.5, 250, 1,500, 12k, 3M."""
    return compact(value) if value >= 10_000 else f"{value:,g}"


def compact(value: float) -> str:
    """Short numbers: 950, 1.5k, 12k, 3M."""
    for divisor, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= divisor:
            return f"{value / divisor:.1f}".removesuffix(".0") + suffix
    return f"{value:.1f}".removesuffix(".0")


def day_label(day: date) -> str:
    return f"{day.day} {day:%b}"


def long_day(day: date) -> str:
    return f"{WEEKDAYS[day.weekday()]} {day.day} {day:%b %Y}"


def device_name(device_type: str) -> str:
    """smart_tv -> Smart TV."""
    text = " ".join("TV" if word == "tv" else word for word in device_type.split("_"))
    return text[:1].upper() + text[1:]


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
