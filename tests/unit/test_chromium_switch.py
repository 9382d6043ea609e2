"""The report's browser tests: skipped without Chromium locally, required in CI."""

from __future__ import annotations

import pytest

from scripts import chromium
from tests.integration.conftest import chromium_or_skip


@pytest.fixture
def no_chromium(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(chromium.ChromiumMissing):
        chromium.binary()


def test_without_chromium_they_skip_naming_the_install_command(no_chromium, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        chromium_or_skip()
    reason = str(skipped.value)
    assert "`apt-get install chromium`" in reason
    assert "CI=true makes this a failure" in reason
    assert "\n" not in reason


@pytest.mark.parametrize("ci", ["true", "1"])
def test_in_ci_a_missing_chromium_fails_them(no_chromium, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="CI=true: the browser tests must run"):
        chromium_or_skip()


def test_with_chromium_they_run(monkeypatch):
    monkeypatch.setenv("CI", "true")
    try:
        chromium.binary()
    except chromium.ChromiumMissing:
        pytest.skip("Chromium is not installed here")
    chromium_or_skip()
