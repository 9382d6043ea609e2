"""Options shared by every test folder."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--stack",
        choices=("embedded", "compose"),
        default="embedded",
        help="embedded: start PostgreSQL and chdb here (default); compose: check a running "
        "`docker compose up` stack through its localhost ports.",
    )
