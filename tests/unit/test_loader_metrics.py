"""The loader's /metrics and /healthz, served on a loopback port as the service serves them."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import replace

import pytest

from cinema import sandbox
from cinema.settings import load_settings
from loader import metrics as loader_metrics
from loader.metrics import Metrics, probe, scrape_watermark, serve


def test_every_series_is_exposed_from_the_start_in_prometheus_format():
    text = Metrics().render()
    for line in (
        "# TYPE cinema_loader_rows_loaded_total counter",
        'cinema_loader_rows_loaded_total{table="viewing_events"} 0',
        'cinema_loader_rows_quarantined_total{table="users"} 0',
        'cinema_loader_errors_total{kind="transient"} 0',
        "cinema_loader_batches_total 0",
        "cinema_loader_watermark 0",
        "cinema_loader_lag_seconds -1",
        "cinema_loader_up 0",
    ):
        assert line in text.splitlines()


def test_batches_and_progress_show_in_the_counters_and_gauges():
    metrics = Metrics()
    metrics.batch({"viewing_events": 1000, "users": 3}, {"viewing_events": 1}, 0.25)
    metrics.batch({"viewing_events": 500}, {}, 0.25)
    metrics.progress(watermark=4242, lag_rows=17, complete_as_of=time.time() - 2)
    metrics.error("transient")
    lines = metrics.render().splitlines()
    assert 'cinema_loader_rows_loaded_total{table="viewing_events"} 1500' in lines
    assert 'cinema_loader_rows_quarantined_total{table="viewing_events"} 1' in lines
    assert "cinema_loader_batches_total 2" in lines
    assert "cinema_loader_batch_seconds_total 0.5" in lines
    assert 'cinema_loader_errors_total{kind="transient"} 1' in lines
    assert "cinema_loader_watermark 4242" in lines
    assert "cinema_loader_lag_rows 17" in lines
    lag = next(float(line.split()[1]) for line in lines if line.startswith("cinema_loader_lag_seconds "))
    assert 2 <= lag < 10


def test_healthy_only_while_the_loop_makes_progress(monkeypatch):
    metrics = Metrics()
    assert metrics.health()[0] is False
    metrics.progress(watermark=1, lag_rows=0, complete_as_of=None)
    healthy, report = metrics.health()
    assert healthy
    assert report["status"] == "ok"
    metrics.state("retrying")
    assert metrics.health()[0] is False
    metrics.progress(watermark=2, lag_rows=0, complete_as_of=None)
    later = time.monotonic() + loader_metrics.SILENCE_SECONDS + 1
    monkeypatch.setattr(loader_metrics.time, "monotonic", lambda: later)
    healthy, report = metrics.health()
    assert not healthy
    assert report["seconds_since_progress"] > loader_metrics.SILENCE_SECONDS


def test_a_pinned_xmin_is_a_stall_once_it_lasts_the_threshold():
    metrics = Metrics(stall_seconds=5)
    metrics.progress(watermark=7, lag_rows=300, complete_as_of=None)
    metrics.stalled(4.0, 4321, "held by subscriber backend 4321")
    assert metrics.health()[0] is True
    assert "cinema_loader_stall_seconds 4.0" in metrics.render().splitlines()
    metrics.stalled(6.0, 4321, "held by subscriber backend 4321")
    healthy, report = metrics.health()
    assert not healthy
    assert report["status"] == "stalled"
    assert report["blocking_pid"] == 4321
    assert report["stall"] == "held by subscriber backend 4321"
    lines = metrics.render().splitlines()
    assert "cinema_loader_stall_blocking_pid 4321" in lines
    assert "cinema_loader_up 0" in lines
    metrics.stalled(0.0, None, "")
    assert metrics.health()[0] is True
    assert "cinema_loader_stall_blocking_pid 0" in metrics.render().splitlines()


@pytest.fixture
def settings(monkeypatch, tmp_path):
    """Settings with every required password and a free loopback metrics port."""
    for name in (
        "POSTGRES_PUBLICIST_PASSWORD",
        "POSTGRES_SUBSCRIPTION_PASSWORD",
        "POSTGRES_PRODUCER_PASSWORD",
        "POSTGRES_REPLICATION_PASSWORD",
        "POSTGRES_LOADER_PASSWORD",
        "POSTGRES_MONITOR_PASSWORD",
    ):
        monkeypatch.setenv(name, "unused")
    settings = load_settings(env_file=tmp_path / ".env-absent")
    return replace(
        settings, loader=replace(settings.loader, metrics_host="127.0.0.1", metrics_port=sandbox.free_port())
    )


@pytest.fixture
def served(settings):
    metrics = Metrics()
    server = serve(metrics, "127.0.0.1", settings.loader.metrics_port)
    try:
        yield metrics
    finally:
        server.shutdown()
        server.server_close()


def test_the_probe_and_the_healthcheck_url_follow_the_health(settings, served):
    healthy, body = probe(settings)
    assert not healthy
    assert json.loads(body)["state"] == "starting"
    served.progress(watermark=99, lag_rows=0, complete_as_of=time.time())
    healthy, body = probe(settings)
    assert healthy
    assert json.loads(body)["watermark"] == 99
    assert scrape_watermark(settings) == 99
    port = settings.loader.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=4) as response:
        assert response.status == 200
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=4)
    assert missing.value.code == 404


def test_the_probe_fails_clearly_when_no_loader_answers(settings):
    healthy, body = probe(settings)
    assert not healthy
    assert body.startswith(f"no loader answers at http://127.0.0.1:{settings.loader.metrics_port}/healthz")
    assert scrape_watermark(settings) is None
