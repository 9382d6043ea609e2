"""`cinema metabase provision`: the REST sequence described in `metabase/__init__.py`."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from cinema.retrying import Backoff, poll, retry
from cinema.settings import MetabaseSettings, Settings

log = logging.getLogger(__name__)

DEFINITION = Path(__file__).with_name("dashboard.json")
SESSION_HEADER = "X-Metabase-Session"
SITE_NAME = "Cinema analytics"
# A proxy, or Metabase itself while it starts ("initializing"), answers these.
TRANSIENT_STATUSES = frozenset({502, 503, 504})
REQUEST_ATTEMPTS = 5
FIRST_BACKOFF_SECONDS = 0.5
HEALTH_FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 8.0


class MetabaseError(RuntimeError):
    """Metabase refused a request, or never became ready."""


class StatusError(MetabaseError):
    """Metabase answered with an HTTP error status."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {message}")
        self.status = status


class Unavailable(MetabaseError):
    """No answer, or a 'not ready yet' one: worth another try."""


# ---------------------------------------------------------------------------- definition


@dataclass(frozen=True)
class Layout:
    row: int
    col: int
    size_x: int
    size_y: int


@dataclass(frozen=True)
class Card:
    name: str
    description: str
    display: str
    sql: str
    visualization_settings: dict[str, Any]
    layout: Layout


@dataclass(frozen=True)
class Definition:
    database_name: str
    database_dbname: str
    dashboard_name: str
    dashboard_description: str
    cards: tuple[Card, ...]


class DefinitionError(ValueError):
    """metabase/dashboard.json is not what the provisioning expects."""


def load_definition(path: Path = DEFINITION) -> Definition:
    try:
        raw = json.loads(path.read_text())
        cards = tuple(
            Card(
                name=card["name"],
                description=card["description"],
                display=card["display"],
                sql="\n".join(card["sql"]),
                visualization_settings=card["visualization_settings"],
                layout=Layout(**card["layout"]),
            )
            for card in raw["cards"]
        )
        definition = Definition(
            database_name=raw["database"]["name"],
            database_dbname=raw["database"]["dbname"],
            dashboard_name=raw["dashboard"]["name"],
            dashboard_description=raw["dashboard"]["description"],
            cards=cards,
        )
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise DefinitionError(f"{path}: {error!r}") from error
    names = [card.name for card in cards]
    if len(set(names)) != len(names):
        raise DefinitionError(f"{path}: card names must be unique (they identify the cards on a rerun)")
    return definition


# ---------------------------------------------------------------------------- HTTP


def _message(payload: bytes) -> str:
    """Metabase's own words from an error body: `message`, or the per-field `errors`."""
    try:
        body = json.loads(payload)
    except ValueError:
        return payload.decode(errors="replace").strip()[:500]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("errors") or body)[:500]
    return str(body)[:500]


@dataclass
class MetabaseClient:
    """JSON over HTTP; after logging in, every request carries the session header."""

    base_url: str
    timeout_seconds: float = 60.0
    session: str | None = None
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def __post_init__(self) -> None:
        if urllib.parse.urlsplit(self.base_url).scheme not in ("http", "https"):
            raise MetabaseError(f"METABASE_URL must be an http(s) URL, got {self.base_url!r}")

    def send_once(self, method: str, path: str, body: object | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)  # noqa: S310 (scheme checked)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.session is not None:
            request.add_header(SESSION_HEADER, self.session)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:  # noqa: S310
                payload: bytes = response.read()
        except urllib.error.HTTPError as error:
            message = _message(error.read())
            if error.code in TRANSIENT_STATUSES:
                raise Unavailable(f"{method} {path} -> HTTP {error.code}: {message}") from error
            raise StatusError(method, path, error.code, message) from error
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise Unavailable(f"{method} {path}: {reason}") from error
        if not payload.strip():
            return None
        try:
            return json.loads(payload)
        except ValueError as error:
            raise MetabaseError(
                f"{method} {path} did not answer JSON ({payload[:80]!r}): is {self.base_url} a Metabase?"
            ) from error

    def send(self, method: str, path: str, body: object | None = None) -> Any:
        """`send_once`; while Metabase is unavailable, reads and updates are retried with
        a capped backoff. A POST is not: it may have been applied before the answer got
        lost, so the run fails instead, and a rerun finds what it created by name."""
        try:
            return retry(
                lambda: self.send_once(method, path, body),
                retryable=lambda error: isinstance(error, Unavailable) and method != "POST",
                backoff=Backoff(FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS, tries=REQUEST_ATTEMPTS - 1),
                on_retry=lambda error, attempt, _delay: log.warning(
                    "metabase not answering, retrying", extra={"error": str(error), "attempt": attempt}
                ),
                sleep=self.sleep,
            )
        except Unavailable as error:
            if method == "POST":
                raise MetabaseError(f"{error} (a POST is not retried; run the provisioning again)") from error
            raise MetabaseError(f"{error} (gave up after {REQUEST_ATTEMPTS} attempts)") from error


def wait_until_healthy(
    client: MetabaseClient, timeout_seconds: float, clock: Callable[[], float] = time.monotonic
) -> None:
    last = "no answer yet"

    def healthy() -> bool:
        nonlocal last
        try:
            health = client.send_once("GET", "/api/health")
        except Unavailable as error:
            last = str(error)
            return False
        last = f"status {health.get('status')!r}" if isinstance(health, dict) else repr(health)
        return isinstance(health, dict) and health.get("status") == "ok"

    poll(
        healthy,
        timeout_seconds=timeout_seconds,
        interval=Backoff(HEALTH_FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS),
        timed_out=lambda: MetabaseError(
            f"Metabase at {client.base_url} is not healthy after {timeout_seconds:.0f}s ({last})"
        ),
        clock=clock,
        sleep=client.sleep,
    )


def _rows(listing: Any) -> list[dict[str, Any]]:
    """List endpoints answer either a JSON array or `{"data": [...], "total": n}`."""
    rows = listing.get("data", []) if isinstance(listing, dict) else listing
    return [row for row in rows if isinstance(row, dict) and not row.get("archived", False)]


# ---------------------------------------------------------------------------- steps


@dataclass
class Report:
    """What a run found and what it created, for the log and the command's output."""

    created: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)

    def note(self, created: bool, what: str) -> None:
        (self.created if created else self.found).append(what)
        log.info("created" if created else "already there", extra={"object": what})


def log_in(client: MetabaseClient, metabase: MetabaseSettings, properties: dict[str, Any], report: Report) -> None:
    if not properties.get("has-user-setup"):
        token = properties.get("setup-token")
        if not token:
            raise MetabaseError("Metabase has no user yet but its session properties carry no setup-token")
        try:
            answer = client.send(
                "POST",
                "/api/setup",
                {
                    "token": token,
                    "user": {
                        "email": metabase.admin_email,
                        "password": metabase.admin_password,
                        "first_name": "Cinema",
                        "last_name": "Admin",
                        "site_name": SITE_NAME,
                    },
                    "prefs": {"site_name": SITE_NAME, "site_locale": "en", "allow_tracking": False},
                },
            )
        except StatusError as error:
            if error.status != 403:  # 403: another run created the admin since we looked
                raise MetabaseError(
                    f"Metabase rejected the admin account {metabase.admin_email!r}: {error}. "
                    "Check METABASE_ADMIN_EMAIL and METABASE_ADMIN_PASSWORD (Metabase refuses common passwords)."
                ) from error
        else:
            client.session = str(answer["id"])
            report.note(True, f"admin {metabase.admin_email}")
            return
    try:
        answer = client.send(
            "POST", "/api/session", {"username": metabase.admin_email, "password": metabase.admin_password}
        )
    except StatusError as error:
        raise MetabaseError(
            f"Metabase refused the login of {metabase.admin_email!r}: {error}. The admin keeps the password it was "
            "created with: set METABASE_ADMIN_PASSWORD to it, or start Metabase's database afresh "
            "(docker compose down -v)."
        ) from error
    client.session = str(answer["id"])


def ensure_no_tracking(client: MetabaseClient, properties: dict[str, Any], report: Report) -> None:
    """Anonymous usage tracking off. `POST /api/setup` turns it on whatever its
    `prefs.allow_tracking` says; the setting is public, so the session properties show it."""
    if properties.get("anon-tracking-enabled") is False:
        report.note(False, "anonymous tracking: off")
        return
    client.send("PUT", "/api/setting/anon-tracking-enabled", {"value": False})
    report.note(True, "anonymous tracking: off")


def ensure_database(client: MetabaseClient, settings: Settings, definition: Definition, report: Report) -> int:
    for database in _rows(client.send("GET", "/api/database")):
        if database.get("name") == definition.database_name:
            if database.get("engine") != "clickhouse":
                raise MetabaseError(
                    f"Metabase already has a database named {definition.database_name!r} with engine "
                    f"{database.get('engine')!r}; rename it or remove it"
                )
            report.note(False, f"database {definition.database_name!r} #{database['id']}")
            return int(database["id"])
    created = client.send(
        "POST",
        "/api/database",
        {
            "engine": "clickhouse",
            "name": definition.database_name,
            "details": {
                "host": settings.warehouse.host,
                "port": settings.warehouse.port,
                "user": settings.metabase.clickhouse_user,
                "password": settings.metabase.clickhouse_password,
                "dbname": definition.database_dbname,
                "scan-all-databases": False,
                "ssl": False,
            },
            "is_full_sync": True,
        },
    )
    database_id = int(created["id"])
    client.send("POST", f"/api/database/{database_id}/sync_schema")
    report.note(True, f"database {definition.database_name!r} #{database_id} (schema sync started)")
    return database_id


def ensure_cards(client: MetabaseClient, database_id: int, cards: tuple[Card, ...], report: Report) -> dict[str, int]:
    existing = {card["name"]: int(card["id"]) for card in _rows(client.send("GET", "/api/card?f=all"))}
    card_ids: dict[str, int] = {}
    for card in cards:
        if card.name in existing:
            card_ids[card.name] = existing[card.name]
            report.note(False, f"card {card.name!r} #{card_ids[card.name]}")
            continue
        created = client.send(
            "POST",
            "/api/card",
            {
                "name": card.name,
                "description": card.description,
                "type": "question",
                "display": card.display,
                "dataset_query": {
                    "database": database_id,
                    "type": "native",
                    "native": {"query": card.sql, "template-tags": {}},
                },
                "visualization_settings": card.visualization_settings,
            },
        )
        card_ids[card.name] = int(created["id"])
        report.note(True, f"card {card.name!r} #{card_ids[card.name]}")
    return card_ids


def ensure_dashboard(client: MetabaseClient, definition: Definition, card_ids: dict[str, int], report: Report) -> int:
    items = _rows(client.send("GET", "/api/collection/root/items?models=dashboard"))
    matches = [item for item in items if item.get("name") == definition.dashboard_name]
    if matches:
        dashboard_id = int(matches[0]["id"])
        report.note(False, f"dashboard {definition.dashboard_name!r} #{dashboard_id}")
    else:
        created = client.send(
            "POST",
            "/api/dashboard",
            {"name": definition.dashboard_name, "description": definition.dashboard_description},
        )
        dashboard_id = int(created["id"])
        report.note(True, f"dashboard {definition.dashboard_name!r} #{dashboard_id}")
    if client.send("GET", f"/api/dashboard/{dashboard_id}").get("dashcards"):
        return dashboard_id  # already laid out, perhaps edited by someone since: leave it
    dashcards = [
        {
            # Negative ids ask Metabase to create the dashcard.
            "id": -position,
            "card_id": card_ids[card.name],
            "row": card.layout.row,
            "col": card.layout.col,
            "size_x": card.layout.size_x,
            "size_y": card.layout.size_y,
            "parameter_mappings": [],
            "visualization_settings": {},
        }
        for position, card in enumerate(definition.cards, start=1)
    ]
    client.send("PUT", f"/api/dashboard/{dashboard_id}", {"dashcards": dashcards, "tabs": []})
    report.note(True, f"{len(dashcards)} cards on dashboard #{dashboard_id}")
    return dashboard_id


def ensure_homepage(client: MetabaseClient, dashboard_id: int, properties: dict[str, Any], report: Report) -> None:
    if properties.get("custom-homepage") is True and properties.get("custom-homepage-dashboard") == dashboard_id:
        report.note(False, f"homepage: dashboard #{dashboard_id}")
        return
    client.send("PUT", "/api/setting", {"custom-homepage": True, "custom-homepage-dashboard": dashboard_id})
    report.note(True, f"homepage: dashboard #{dashboard_id}")


def provision(
    client: MetabaseClient, settings: Settings, definition: Definition, health_timeout_seconds: float
) -> tuple[int, Report]:
    """Run the whole sequence; returns the dashboard id and what was found or created."""
    missing = [
        name
        for name, value in (
            ("METABASE_ADMIN_PASSWORD", settings.metabase.admin_password),
            ("CLICKHOUSE_METABASE_PASSWORD", settings.metabase.clickhouse_password),
        )
        if not value
    ]
    if missing:
        raise MetabaseError(f"{' and '.join(missing)} not set: run `make .env` (fresh secrets) or export them")
    report = Report()
    wait_until_healthy(client, health_timeout_seconds)
    properties = client.send("GET", "/api/session/properties")
    log_in(client, settings.metabase, properties, report)
    ensure_no_tracking(client, properties, report)
    database_id = ensure_database(client, settings, definition, report)
    card_ids = ensure_cards(client, database_id, definition.cards, report)
    dashboard_id = ensure_dashboard(client, definition, card_ids, report)
    ensure_homepage(client, dashboard_id, properties, report)
    return dashboard_id, report


@click.group()
def metabase() -> None:
    """Metabase: the starter dashboard on the marts."""


@metabase.command("provision")
@click.option(
    "--wait",
    "wait_seconds",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Seconds to wait for Metabase to report healthy.",
)
def provision_command(wait_seconds: float) -> None:
    """Admin, ClickHouse connection, cards, dashboard and homepage; a rerun changes nothing."""
    from cinema.context import settings_from_context

    settings = settings_from_context()
    try:
        client = MetabaseClient(settings.metabase.url)
        dashboard_id, report = provision(client, settings, load_definition(), wait_seconds)
    except (MetabaseError, DefinitionError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"created: {', '.join(report.created) or 'nothing (already provisioned)'}")
    click.echo(f"dashboard: {settings.metabase.url}/dashboard/{dashboard_id}")
