"""`cinema metabase provision` against a recorded Metabase 58 contract.

A stdlib HTTP server on 127.0.0.1 plays Metabase: it expects the recorded requests
in order (method, path and query, session header, the recorded subset of the JSON
body) and answers each with the recorded response. Anything else (an unexpected
write on a rerun, a missing step, a wrong body) is a mismatch and fails the test.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cinema import sandbox
from cinema.cli import main
from metabase.provision import (
    SESSION_HEADER,
    MetabaseClient,
    MetabaseError,
    Unavailable,
    load_definition,
    wait_until_healthy,
)

CONTRACT = json.loads((Path(__file__).parent / "contracts" / "metabase_v0.58.json").read_text())
ADMIN_PASSWORD = "provision-Test-42"  # noqa: S105 (the recorded contract's)
MARTS_PASSWORD = "marts-reader-secret"  # noqa: S105


def subset_mismatch(expected: Any, actual: Any, where: str = "body") -> str | None:
    """Where `actual` differs from `expected`, if it does: dicts may carry more keys, lists match item by item."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        pairs = [(value, actual.get(key, "<missing>"), f"{where}.{key}") for key, value in expected.items()]
    elif isinstance(expected, list) and isinstance(actual, list) and len(actual) == len(expected):
        pairs = [
            (item, other, f"{where}[{index}]") for index, (item, other) in enumerate(zip(expected, actual, strict=True))
        ]
    elif type(expected) in (dict, list) or expected != actual:
        return f"{where}: expected {expected!r}, got {actual!r}"
    else:
        return None
    return next((problem for pair in pairs if (problem := subset_mismatch(*pair))), None)


@dataclass
class RecordedMetabase:
    """Replays `exchanges` in order; collects every deviation in `mismatches`."""

    exchanges: list[dict[str, Any]]
    mismatches: list[str] = field(default_factory=list)
    served: int = 0
    sessions: set[str] = field(default_factory=set)
    # Every request as it came: (method, path, JSON body).
    received: list[tuple[str, str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        with self.lock:
            self.received.append((method, path, body))
            if self.served >= len(self.exchanges):
                self.mismatches.append(f"unexpected request after the contract ended: {method} {path} {body!r}")
                return 418, {"message": "not in the recorded contract"}
            expected = self.exchanges[self.served]
            self.served += 1
            problems = []
            if (method, path) != (expected["method"], expected["path"]):
                problems.append(f"expected {expected['method']} {expected['path']}, got {method} {path}")
            session = headers.get(SESSION_HEADER.lower())
            if expected["session"] and session not in self.sessions:
                problems.append(f"{method} {path}: no valid {SESSION_HEADER} header (got {session!r})")
            if not expected["session"] and session is not None:
                problems.append(f"{method} {path}: sent a session before logging in")
            if "body" in expected and (problem := subset_mismatch(expected["body"], body)):
                problems.append(f"{method} {path}: {problem}")
            if problems:
                self.mismatches.extend(problems)
                return 418, {"message": "; ".join(problems)}
            response = expected["response"]
            if path in ("/api/setup", "/api/session") and expected["status"] == 200:
                self.sessions.add(response["id"])
            return expected["status"], response


@contextmanager
def serving(metabase: RecordedMetabase) -> Iterator[str]:
    """`metabase` listening on a free loopback port, at the URL this yields."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, response = metabase.answer(self.command, self.path, headers, body)
            payload = b"" if response is None else json.dumps(response).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the mismatches say what went wrong."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def recorded() -> Iterator[tuple[RecordedMetabase, str]]:
    """A RecordedMetabase listening on a free loopback port; its `exchanges` are set by the test."""
    metabase = RecordedMetabase(exchanges=[])
    with serving(metabase) as url:
        yield metabase, url


def provision(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **overrides: str) -> Any:
    """`cinema metabase provision` in a folder without .env, configured like the metabase-init container."""
    environment = {
        **sandbox.environment(tmp_path),
        "CLICKHOUSE_INTERFACE": "http",
        "CLICKHOUSE_HOST": "clickhouse",
        "CLICKHOUSE_PORT": "8123",
        "CLICKHOUSE_METABASE_USER": "cinema_metabase",
        "CLICKHOUSE_METABASE_PASSWORD": MARTS_PASSWORD,
        "METABASE_URL": url,
        "METABASE_ADMIN_EMAIL": "admin@example.com",
        "METABASE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        **overrides,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return CliRunner().invoke(main, ["metabase", "provision", "--wait", "30"])


def tracking_off() -> dict[str, Any]:
    [exchange] = [e for e in CONTRACT["first_run"] if e["path"] == "/api/setting/anon-tracking-enabled"]
    return dict(exchange)


def test_anonymous_tracking_is_switched_off_right_after_the_login() -> None:
    """Metabase's source (src/metabase/settings): `anon-tracking-enabled`, boolean, default true,
    public; `PUT /api/setting/:key` with `{"value": ...}` answers 204."""
    first = CONTRACT["first_run"]
    paths = [(e["method"], e["path"]) for e in first]
    setup = paths.index(("POST", "/api/setup"))

    assert paths[setup + 1] == ("PUT", "/api/setting/anon-tracking-enabled")
    assert first[setup + 1]["body"] == {"value": False} and first[setup + 1]["session"] is True
    assert first[setup - 1]["response"]["anon-tracking-enabled"] is True, "Metabase's default"
    assert CONTRACT["rerun"][1]["response"]["anon-tracking-enabled"] is False, "a rerun finds it off and leaves it"


def test_first_run_creates_everything_in_the_recorded_order(
    recorded: tuple[RecordedMetabase, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metabase, url = recorded
    metabase.exchanges = CONTRACT["first_run"]

    result = provision(url, tmp_path, monkeypatch)

    assert metabase.mismatches == []
    assert result.exit_code == 0, result.output
    assert metabase.served == len(CONTRACT["first_run"])
    assert f"dashboard: {url}/dashboard/3" in result.output
    assert "card 'Top countries by watch hours' #16" in result.output
    assert "7 cards on dashboard #3" in result.output


def test_rerun_only_reads(
    recorded: tuple[RecordedMetabase, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metabase, url = recorded
    metabase.exchanges = CONTRACT["rerun"]

    result = provision(url, tmp_path, monkeypatch)

    assert metabase.mismatches == []
    assert result.exit_code == 0, result.output
    assert metabase.served == len(CONTRACT["rerun"])
    writes = [e for e in CONTRACT["rerun"] if e["method"] != "GET" and e["path"] != "/api/session"]
    assert writes == []
    assert "created: nothing (already provisioned)" in result.output


def test_interrupted_run_is_completed_without_duplicates(
    recorded: tuple[RecordedMetabase, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A previous run died after the dashboard was created, before its cards were placed."""
    first = {(e["method"], e["path"], (e.get("body") or {}).get("name")): e for e in CONTRACT["first_run"]}
    rerun = {(e["method"], e["path"]): e for e in CONTRACT["rerun"]}
    cards_so_far = [card for card in rerun["GET", "/api/card?f=all"]["response"] if card["id"] <= 14]
    metabase, url = recorded
    metabase.exchanges = [
        rerun["GET", "/api/health"],
        {
            **rerun["GET", "/api/session/properties"],
            "response": {"has-user-setup": True, "custom-homepage": False, "anon-tracking-enabled": False},
        },
        rerun["POST", "/api/session"],
        rerun["GET", "/api/database"],
        {**rerun["GET", "/api/card?f=all"], "response": cards_so_far},
        first["POST", "/api/card", "Watch hours by device"],
        first["POST", "/api/card", "Top countries by watch hours"],
        first["POST", "/api/card", "Now watching"],
        rerun["GET", "/api/collection/root/items?models=dashboard"],
        first["GET", "/api/dashboard/3", None],
        first["PUT", "/api/dashboard/3", None],
        first["PUT", "/api/setting", None],
    ]

    result = provision(url, tmp_path, monkeypatch)

    assert metabase.mismatches == []
    assert result.exit_code == 0, result.output
    assert metabase.served == len(metabase.exchanges)


def test_setup_lost_to_a_concurrent_run_logs_in_instead(
    recorded: tuple[RecordedMetabase, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = CONTRACT["first_run"]
    rerun = CONTRACT["rerun"]
    metabase, url = recorded
    already_set_up = {
        "message": "The /api/setup route can only be used to create the first user, however a user currently exists."
    }
    metabase.exchanges = [
        first[1],
        first[2],
        {**first[3], "status": 403, "response": already_set_up},
        rerun[2],
        tracking_off(),
        *rerun[3:],
        first[-1],
    ]

    result = provision(url, tmp_path, monkeypatch)

    assert metabase.mismatches == []
    assert result.exit_code == 0, result.output
    assert metabase.served == len(metabase.exchanges)


def test_a_refused_login_names_the_setting_to_fix(
    recorded: tuple[RecordedMetabase, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rerun = CONTRACT["rerun"]
    metabase, url = recorded
    metabase.exchanges = [
        rerun[0],
        rerun[1],
        {**rerun[2], "body": {"password": "not-the-first-one"}, "status": 401,
         "response": {"errors": {"password": "did not match stored password"}}},
    ]  # fmt: skip

    result = provision(url, tmp_path, monkeypatch, METABASE_ADMIN_PASSWORD="not-the-first-one")  # noqa: S106

    assert result.exit_code == 1
    assert "refused the login of 'admin@example.com'" in result.output
    assert "HTTP 401" in result.output
    assert "METABASE_ADMIN_PASSWORD" in result.output
    assert metabase.served == 3
    assert metabase.mismatches == []


def test_missing_secrets_fail_before_any_request(
    recorded: tuple[RecordedMetabase, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metabase, url = recorded

    result = provision(url, tmp_path, monkeypatch, METABASE_ADMIN_PASSWORD="", CLICKHOUSE_METABASE_PASSWORD="")

    assert result.exit_code == 1
    assert "METABASE_ADMIN_PASSWORD and CLICKHOUSE_METABASE_PASSWORD not set" in result.output
    assert metabase.served == 0


def test_health_wait_gives_up_at_the_deadline_with_the_last_status() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    class Initializing(MetabaseClient):
        def send_once(self, method: str, path: str, body: object | None = None) -> Any:
            raise Unavailable(f"{method} {path} -> HTTP 503: initializing")

    client = Initializing("http://metabase:3000", sleep=sleep)

    with pytest.raises(MetabaseError, match=r"not healthy after 60s \(GET /api/health -> HTTP 503: initializing\)"):
        wait_until_healthy(client, 60, clock=lambda: now[0])
    assert now[0] >= 60
    assert max(slept) == 8.0  # backoff is capped


def test_reads_are_retried_but_a_post_is_not() -> None:
    calls: list[str] = []

    class Flaky(MetabaseClient):
        def send_once(self, method: str, path: str, body: object | None = None) -> Any:
            calls.append(method)
            if len(calls) < 3 or method == "POST":
                raise Unavailable(f"{method} {path}: connection refused")
            return {"data": []}

    client = Flaky("http://metabase:3000", sleep=lambda _: None)

    assert client.send("GET", "/api/database") == {"data": []}
    assert calls == ["GET", "GET", "GET"]
    with pytest.raises(MetabaseError, match="connection refused"):
        client.send("POST", "/api/card", {"name": "x"})
    assert calls == ["GET", "GET", "GET", "POST"]


def test_the_contract_covers_every_card_of_the_definition() -> None:
    definition = load_definition()
    posted = [e["body"]["name"] for e in CONTRACT["first_run"] if (e["method"], e["path"]) == ("POST", "/api/card")]
    placed = next(e for e in CONTRACT["first_run"] if e["method"] == "PUT" and "dashcards" in e.get("body", {}))

    assert posted == [card.name for card in definition.cards]
    assert [(d["row"], d["col"], d["size_x"], d["size_y"]) for d in placed["body"]["dashcards"]] == [
        (c.layout.row, c.layout.col, c.layout.size_x, c.layout.size_y) for c in definition.cards
    ]
