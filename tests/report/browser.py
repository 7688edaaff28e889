"""Headless Chromium for the report's tests: the page as the browser built it, and a screenshot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def chromium() -> str:
    """The Chromium executable; a clear failure (not a skip) when it is missing."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("headless Chromium is needed for this test: apt-get install -y chromium (.ci/run does)")


def _run(args: list[str], profile: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)


def dump_dom(page: Path, profile: Path) -> str:
    """The DOM after the page loaded (scripts ran), serialised."""
    return _run(["--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()], profile).stdout


def screenshot(page: Path, out: Path, profile: Path, size: tuple[int, int] = (1400, 2400)) -> Path:
    _run([f"--window-size={size[0]},{size[1]}", f"--screenshot={out}", page.resolve().as_uri()], profile)
    return out
