"""Reference data: a curated catalog of real films and a population of households.

Both are independent of the event seed: user 17 is the same person in every run,
so generations with different seeds share one user table and one catalog.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib.resources import files

from faker import Faker

DEVICE_TYPES = ("smart_tv", "streaming_stick", "game_console", "desktop", "laptop", "tablet", "phone")
PLANS = ("basic", "standard", "premium")


@dataclass(frozen=True)
class Country:
    code: str
    faker_locale: str
    # Standard time of the most populous zone; daylight saving is not modelled.
    utc_offset_minutes: int
    share: float


COUNTRIES = (
    Country("US", "en_US", -300, 0.30),
    Country("GB", "en_GB", 0, 0.09),
    Country("DE", "de_DE", 60, 0.08),
    Country("FR", "fr_FR", 60, 0.07),
    Country("BR", "pt_BR", -180, 0.08),
    Country("IN", "en_IN", 330, 0.08),
    Country("JP", "ja_JP", 540, 0.06),
    Country("CA", "en_CA", -300, 0.05),
    Country("ES", "es_ES", 60, 0.05),
    Country("IT", "it_IT", 60, 0.04),
    Country("MX", "es_MX", -360, 0.04),
    Country("AU", "en_AU", 600, 0.03),
    Country("NL", "nl_NL", 60, 0.02),
    Country("SE", "sv_SE", 60, 0.01),
)


@dataclass(frozen=True)
class Movie:
    movie_id: int
    title: str
    release_year: int
    genre: str
    runtime_seconds: int
    # Rank in the popularity skew (1 = most watched) and how gripping the film is:
    # appeal scales the hazard of walking away mid-film (below 1 = fewer drop-offs).
    popularity_rank: int
    appeal: float

    @property
    def runtime_ms(self) -> int:
        return self.runtime_seconds * 1000


@dataclass(frozen=True)
class User:
    user_id: int
    display_name: str
    country: Country
    plan: str
    signed_up_at: datetime
    devices: tuple[str, ...]
    favourite_genres: tuple[str, ...]
    # Relative viewing frequency: a few heavy viewers, a long tail of occasional ones.
    activity: float


@cache
def load_movies() -> tuple[Movie, ...]:
    source = files("producer").joinpath("data/movies.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(source.splitlines()))
    # The popularity order is a fixed shuffle of the catalog: recent hits and classics mixed.
    order = list(range(len(rows)))
    random.Random("catalog/popularity").shuffle(order)
    appeal = random.Random("catalog/appeal")
    return tuple(
        Movie(
            movie_id=int(row["movie_id"]),
            title=row["title"],
            release_year=int(row["release_year"]),
            genre=row["genre"],
            runtime_seconds=int(row["runtime_minutes"]) * 60,
            popularity_rank=order[index] + 1,
            appeal=round(appeal.uniform(0.6, 1.6), 3),
        )
        for index, row in enumerate(rows)
    )


@cache
def _faker(locale: str) -> Faker:
    # Only the person provider: names are all the producer asks for, and loading every
    # provider of 14 locales was most of the households' cost (0.33 s against 0.14 s here).
    return Faker(locale, providers=["faker.providers.person"])


@cache
def genres() -> tuple[str, ...]:
    return tuple(sorted({movie.genre for movie in load_movies()}))


_COUNTRY_WEIGHTS = [country.share for country in COUNTRIES]
_SIGNUP_EPOCH = datetime(2019, 1, 1, tzinfo=UTC)


def make_user(user_id: int) -> User:
    rng = random.Random(f"user/{user_id}")
    country = rng.choices(COUNTRIES, weights=_COUNTRY_WEIGHTS)[0]
    faker = _faker(country.faker_locale)
    faker.seed_instance(user_id)
    # Living-room screens dominate; most households add a personal screen or two.
    devices = {rng.choices(("smart_tv", "streaming_stick", "game_console"), weights=(6, 3, 1))[0]}
    for _ in range(rng.choices((0, 1, 2), weights=(3, 5, 2))[0]):
        devices.add(rng.choices(DEVICE_TYPES[3:], weights=(2, 4, 3, 5))[0])
    return User(
        user_id=user_id,
        display_name=faker.name(),
        country=country,
        plan=rng.choices(PLANS, weights=(3, 5, 2))[0],
        signed_up_at=_SIGNUP_EPOCH + timedelta(seconds=rng.randrange(6 * 365 * 86400)),
        devices=tuple(sorted(devices)),
        favourite_genres=tuple(rng.sample(genres(), 3)),
        activity=rng.lognormvariate(0.0, 0.9),
    )


def make_users(count: int) -> tuple[User, ...]:
    return tuple(make_user(user_id) for user_id in range(1, count + 1))
