"""The report page built from marts given here: text escaped, numbers for people, nothing fetched."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from html.parser import HTMLParser

from cinema.report.charts import nice_axis
from cinema.report.marts import Day, Marts, Movie, Segment, Totals
from cinema.report.page import render
from cinema.report.text import compact, count, device_name, hours, percent

HOSTILE_TITLE = """<script>alert("owned")</script> & O'Brien's "Amélie" — WALL·E"""


class Page(HTMLParser):
    """Elements and text of a page, as a browser would parse them."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[str] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def marts() -> Marts:
    return Marts(
        completed_at=0.9,
        totals=Totals(
            sessions=12_345,
            viewers=2_001,
            watch_hours=15_432.25,
            completion_rate=0.4567,
            avg_session_minutes=75.0,
            first_event=datetime(2026, 3, 2, 8, tzinfo=UTC),
            last_event=datetime(2026, 3, 4, 23, tzinfo=UTC),
        ),
        days=[Day(date(2026, 3, 2), 10.5, 3, 4), Day(date(2026, 3, 3), 0.0, 0, 0), Day(date(2026, 3, 4), 7.25, 2, 2)],
        top_movies=[Movie(HOSTILE_TITLE, "Drama & Co", 2001, 40, 30, 55.5, 0.5)],
        dropoff=[(bucket, 1 - bucket / 125) for bucket in range(10, 101, 10)],
        heatmap=[[float(weekday * 24 + hour) for hour in range(24)] for weekday in range(7)],
        devices=[Segment("smart_tv", "Smart TV", "tv", 100, 80.0, 0.6)],
        countries=[Segment("FR", "Côte <d'Azur>", "Europe", 50, 20.0, 0.4)],
    )


def test_data_text_is_escaped_never_markup() -> None:
    page = Page(render(marts(), datetime(2026, 3, 5, tzinfo=UTC)))
    assert "script" not in page.elements
    text = "".join(page.text)
    assert HOSTILE_TITLE in text
    assert "Côte <d'Azur>" in text
    assert "Drama & Co" in text


def test_the_page_is_self_contained() -> None:
    page = render(marts(), datetime(2026, 3, 5, tzinfo=UTC))
    elements = Page(page).elements
    assert elements.count("svg") == 6
    assert {"script", "link", "img", "iframe"}.isdisjoint(elements)
    assert "http" not in page
    assert "url(" not in page
    # Every cell of the heatmap, every point, every bar.
    assert page.count('class="mark') == 3 + 1 + 10 + 7 * 24 + 1 + 1


def test_numbers_are_written_for_people() -> None:
    assert count(1_234_567) == "1,234,567"
    assert hours(15_432.25) == "15,432 h"
    assert hours(12.34) == "12.3 h"
    assert percent(0.4567) == "45.7%"
    assert percent(0.5, 0) == "50%"
    assert [compact(v) for v in (950, 1_500, 12_000, 3_000_000)] == ["950", "1.5k", "12k", "3M"]
    assert nice_axis(87) == [0, 25, 50, 75, 100]
    assert nice_axis(0.9) == [0, 0.25, 0.5, 0.75, 1.0]
    assert device_name("smart_tv") == "Smart TV"
    assert device_name("streaming_stick") == "Streaming stick"


def test_now_watching_shows_each_minute_and_how_current_the_marts_are() -> None:
    minutes = [(datetime(2026, 3, 4, 21, minute, tzinfo=UTC), 40 + minute, 50 + minute) for minute in range(45)]
    with_live = replace(marts(), now_watching=minutes, as_of=datetime(2026, 3, 4, 21, 44, 30, tzinfo=UTC))
    page = render(with_live, datetime(2026, 3, 5, tzinfo=UTC))
    text = "".join(Page(page).text)
    assert Page(page).elements.count("svg") == 7
    assert "Now watching" in text
    assert "marts as of 2026-03-04 21:44:30 UTC" in text
    assert "21:44 UTC: 84 viewers watching, 94 sessions in progress" in text
    # Without live data the section is left out rather than drawn empty.
    assert "Now watching" not in render(marts(), datetime(2026, 3, 5, tzinfo=UTC))
