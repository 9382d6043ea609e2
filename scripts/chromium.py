"""Headless Chromium, as the report's browser test and its screenshot use it.

Every run gets a fresh profile and the flags that keep Chromium from reaching out:
no background services (updates, sync, components), and no host name resolves at
all, so the few requests left (account and client checks) fail before a DNS query.
The pages opened here are local files that need nothing from a network.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

BINARIES = ("chromium", "chromium-browser", "google-chrome")
QUIET_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--mute-audio",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)
# Measures the laid-out page; appended to a copy, never to the page itself.
HEIGHT_PROBE = "<script>document.body.dataset.pageHeight = document.documentElement.scrollHeight;</script>"


class ChromiumMissing(RuntimeError):
    """No Chromium on PATH."""


def binary() -> str:
    for name in BINARIES:
        found = shutil.which(name)
        if found:
            return found
    raise ChromiumMissing(f"no Chromium found (looked for {', '.join(BINARIES)}): `apt-get install chromium`")


def run(page: Path, *flags: str, width: int, height: int, timeout: float = 120) -> str:
    """Open `page` (a local file) with `flags`, at a window of width x height; Chromium's stdout."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        result = subprocess.run(
            [
                binary(),
                *QUIET_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                *flags,
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"chromium exited {result.returncode}: {result.stderr[-2000:]}")
    return result.stdout


def dump_dom(page: Path, *, width: int = 1280, height: int = 2000) -> str:
    """The DOM after the page's scripts ran (virtual time: timers fire without waiting)."""
    return run(page, "--dump-dom", "--virtual-time-budget=5000", width=width, height=height)


def page_height(page: Path, width: int) -> int:
    """How tall the page lays out at `width`, in CSS pixels."""
    with tempfile.TemporaryDirectory(prefix="page-height-") as scratch:
        probe = Path(scratch) / page.name
        probe.write_text(
            page.read_text(encoding="utf-8").replace("</body>", HEIGHT_PROBE + "</body>"), encoding="utf-8"
        )
        # A short window: scrollHeight is never less than the window.
        dom = dump_dom(probe, width=width, height=400)
    found = re.search(r'data-page-height="(\d+)"', dom)
    if not found:
        raise RuntimeError(f"could not measure {page}: the height probe did not run")
    return int(found.group(1))


def screenshot(page: Path, png: Path, *, width: int) -> None:
    """The whole page as a PNG, width pixels wide."""
    height = page_height(page, width)
    run(page, f"--screenshot={png.resolve()}", width=width, height=height)
