"""CINEMA_LOG_FORMAT=json: one JSON object per line, whatever the message holds, with the
`extra=` fields as keys; text: the same fields as key=value after the message."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from cinema.logs import configure_logging


@pytest.fixture
def restored_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def log_a_few_lines() -> None:
    log = logging.getLogger("loader")
    log.info("loaded %d rows in %d batch(es)", 5000, 2, extra={"watermark": 812, "lag_seconds": None})
    log.error("a message\nover two lines", extra={"table": "users", "key": "990002"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")


def test_json_logs_are_one_object_per_line(restored_root_logger, capsys):
    configure_logging("json")
    log_a_few_lines()
    lines = capsys.readouterr().err.splitlines()

    entries = [json.loads(line) for line in lines]

    assert len(entries) == 3
    assert [(entry["level"], entry["logger"], entry["msg"]) for entry in entries] == [
        ("info", "loader", "loaded 5000 rows in 2 batch(es)"),
        ("error", "loader", "a message\nover two lines"),
        ("error", "loader", "failed"),
    ]
    assert entries[0]["watermark"] == 812
    assert entries[0]["lag_seconds"] is None
    assert (entries[1]["table"], entries[1]["key"]) == ("users", "990002")
    assert "ValueError: boom" in entries[2]["exc"]
    assert all(entry["ts"].endswith("+00:00") for entry in entries)


def test_text_logs_put_the_fields_after_the_message(restored_root_logger, capsys):
    configure_logging("text")
    logging.getLogger("loader").info("loaded %d rows", 5000, extra={"watermark": 812, "rows_per_s": 40000})

    (line,) = capsys.readouterr().err.splitlines()

    assert line.endswith(" INFO    loader loaded 5000 rows watermark=812 rows_per_s=40000")
