"""What the running loader reports: Prometheus metrics on /metrics and a health check on /healthz.

The stdlib HTTP server runs in a daemon thread and reads a snapshot of `Metrics`
under its lock; the loader's loop only ever writes to it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cinema.settings import Settings
from loader.schema import RAW_TABLES

log = logging.getLogger(__name__)

# The loop completes a poll at least every LOADER_POLL_INTERVAL_SECONDS and a batch in
# seconds; a loader silent for this long is stuck or failing and should be restarted.
SILENCE_SECONDS = 60.0
TABLES = tuple(table.name for table in RAW_TABLES)
ERROR_KINDS = ("transient", "fatal")


class Metrics:
    def __init__(self, stall_seconds: float = 60.0) -> None:
        self._lock = threading.Lock()
        # LOADER_STALL_SECONDS: xmin pinned this long with rows behind it is a stall.
        self._stall_threshold = stall_seconds
        self._stall_seconds = 0.0
        self._blocking_pid: int | None = None
        self._stall = ""
        # Every series exists from the start, at 0, so rate() and alerts see it.
        self._rows = dict.fromkeys(TABLES, 0)
        self._quarantined = dict.fromkeys(TABLES, 0)
        self._errors = dict.fromkeys(ERROR_KINDS, 0)
        self._batches = 0
        self._batch_seconds = 0.0
        self._watermark = 0
        self._lag_rows = 0
        # Everything committed on the subscriber before this time is loaded.
        self._complete_as_of: float | None = None
        self._last_progress: float | None = None
        self._state = "starting"

    def batch(self, rows: dict[str, int], quarantined: dict[str, int], seconds: float) -> None:
        with self._lock:
            for table, count in rows.items():
                self._rows[table] += count
            for table, count in quarantined.items():
                self._quarantined[table] += count
            self._batches += 1
            self._batch_seconds += seconds

    def progress(self, watermark: int, lag_rows: int, complete_as_of: float | None) -> None:
        """A poll or batch completed: the loop is alive."""
        with self._lock:
            self._watermark = watermark
            self._lag_rows = lag_rows
            if complete_as_of is not None:
                self._complete_as_of = complete_as_of
            self._last_progress = time.monotonic()
            self._state = "running"

    def stalled(self, seconds: float, blocking_pid: int | None, description: str) -> None:
        """How long xmin has been pinned with committed rows behind it (0: it moves)."""
        with self._lock:
            self._stall_seconds = seconds
            self._blocking_pid = blocking_pid
            self._stall = description if seconds else ""

    def error(self, kind: str) -> None:
        with self._lock:
            self._errors[kind] += 1

    def state(self, state: str) -> None:
        with self._lock:
            self._state = state

    @property
    def watermark(self) -> int:
        with self._lock:
            return self._watermark

    def lag_seconds(self) -> float | None:
        with self._lock:
            return None if self._complete_as_of is None else max(0.0, time.time() - self._complete_as_of)

    def health(self) -> tuple[bool, dict[str, object]]:
        lag = self.lag_seconds()
        with self._lock:
            silent = None if self._last_progress is None else time.monotonic() - self._last_progress
            alive = self._state == "running" and silent is not None and silent < SILENCE_SECONDS
            stalled = self._stall_seconds >= self._stall_threshold
            healthy = alive and not stalled
            report: dict[str, object] = {
                "status": "ok" if healthy else ("stalled" if alive else "unhealthy"),
                "state": self._state,
                "seconds_since_progress": None if silent is None else round(silent, 3),
                "watermark": self._watermark,
                "lag_rows": self._lag_rows,
                "lag_seconds": None if lag is None else round(lag, 3),
            }
            if stalled:
                report.update(
                    stall_seconds=round(self._stall_seconds, 3), blocking_pid=self._blocking_pid, stall=self._stall
                )
            return healthy, report

    def render(self) -> str:
        """The Prometheus text exposition format, version 0.0.4."""
        lag = self.lag_seconds()
        healthy, _ = self.health()
        with self._lock:
            lines = [
                *_family(
                    "cinema_loader_rows_loaded_total",
                    "counter",
                    "Rows written to the raw tables.",
                    {("table", table): count for table, count in sorted(self._rows.items())},
                ),
                *_family(
                    "cinema_loader_rows_quarantined_total",
                    "counter",
                    "Rows ClickHouse cannot hold, quarantined.",
                    {("table", table): count for table, count in sorted(self._quarantined.items())},
                ),
                *_family("cinema_loader_batches_total", "counter", "Batches committed.", {None: self._batches}),
                *_family(
                    "cinema_loader_batch_seconds_total",
                    "counter",
                    "Time spent loading batches.",
                    {None: round(self._batch_seconds, 6)},
                ),
                *_family(
                    "cinema_loader_errors_total",
                    "counter",
                    "Errors by kind: transient (retried) or fatal.",
                    {("kind", kind): count for kind, count in sorted(self._errors.items())},
                ),
                *_family(
                    "cinema_loader_watermark",
                    "gauge",
                    "Subscriber transaction id below which every row is loaded.",
                    {None: self._watermark},
                ),
                *_family(
                    "cinema_loader_lag_rows",
                    "gauge",
                    "Committed subscriber rows not yet loaded, loadable or not (at or above xmin).",
                    {None: self._lag_rows},
                ),
                *_family(
                    "cinema_loader_lag_seconds",
                    "gauge",
                    "Seconds since the last moment everything committed was loaded.",
                    {None: -1 if lag is None else round(lag, 3)},
                ),
                *_family(
                    "cinema_loader_stall_seconds",
                    "gauge",
                    "Seconds the subscriber's xmin has been pinned with committed rows behind it (0: it moves).",
                    {None: round(self._stall_seconds, 3)},
                ),
                *_family(
                    "cinema_loader_stall_blocking_pid",
                    "gauge",
                    "Subscriber backend whose open transaction pins xmin, during a stall (0: none).",
                    {None: self._blocking_pid or 0},
                ),
                *_family("cinema_loader_up", "gauge", "1 while the loader is healthy.", {None: int(healthy)}),
            ]
        return "\n".join(lines) + "\n"


def _family(name: str, kind: str, help_text: str, samples: dict[tuple[str, str] | None, float | int]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for label, value in samples.items():
        labels = "" if label is None else f'{{{label[0]}="{label[1]}"}}'
        lines.append(f"{name}{labels} {value}")
    return lines


def serve(metrics: Metrics, host: str, port: int) -> ThreadingHTTPServer:
    """Start /metrics and /healthz in a daemon thread; `shutdown()` the result to stop."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, "text/plain; version=0.0.4; charset=utf-8", metrics.render())
            elif self.path == "/healthz":
                healthy, report = metrics.health()
                self._send(200 if healthy else 503, "application/json", json.dumps(report) + "\n")
            else:
                self._send(404, "text/plain; charset=utf-8", "try /metrics or /healthz\n")

        def _send(self, status: int, content_type: str, body: str) -> None:
            payload = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("http: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="loader-metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics, health on /healthz", host, port)
    return server


def endpoint(settings: Settings, path: str) -> str:
    # A wildcard listen address is not a destination; the service is on this host then.
    host = settings.loader.metrics_host
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 - compared, not bound
    return f"http://{host}:{settings.loader.metrics_port}{path}"


def probe(settings: Settings, timeout_seconds: float = 4.0) -> tuple[bool, str]:
    """Ask a running loader whether it is healthy (the Docker healthcheck's question)."""
    try:
        with urllib.request.urlopen(endpoint(settings, "/healthz"), timeout=timeout_seconds) as response:  # noqa: S310 - our own http URL
            return response.status == 200, response.read().decode().strip()
    except urllib.error.HTTPError as error:
        return False, error.read().decode().strip()
    except OSError as error:
        return False, f"no loader answers at {endpoint(settings, '/healthz')}: {error}"


def scrape_watermark(settings: Settings, timeout_seconds: float = 4.0) -> int | None:
    """The running loader service's watermark, or None if it does not answer."""
    try:
        with urllib.request.urlopen(endpoint(settings, "/metrics"), timeout=timeout_seconds) as response:  # noqa: S310 - our own http URL
            for line in response.read().decode().splitlines():
                if line.startswith("cinema_loader_watermark "):
                    return int(float(line.split()[1]))
    except OSError:
        return None
    return None
