"""Headless chromium for tests that check what a browser actually renders.

Tests call :func:`require_chromium` first: it skips when chromium is not installed, except
in CI (``AUTOML_REQUIRE_CHROMIUM=1``, set by ``.ci/run``), where a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REQUIRE_ENV = "AUTOML_REQUIRE_CHROMIUM"
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_COMMON_FLAGS = (
    "--headless",
    "--no-sandbox",  # tests run as root in containers
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers have a tiny /dev/shm
    "--no-first-run",
    "--hide-scrollbars",
)


def chromium_path() -> str | None:
    """The chromium executable on PATH, or None when none is installed."""
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_chromium() -> str:
    """The chromium executable; skips the test without one (fails if CI requires it)."""
    path = chromium_path()
    if path is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"chromium is not installed and {REQUIRE_ENV}=1 requires it")
        pytest.skip("chromium is not installed")
    return path


def _run(args: list[str], tmp_path: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    path = require_chromium()
    profile = tmp_path / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    command = [path, *_COMMON_FLAGS, f"--user-data-dir={profile}", *args]
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=True
        )
    except subprocess.CalledProcessError as error:
        raise AssertionError(
            f"chromium failed ({error.returncode}): {error.stderr[-2000:]}"
        ) from error
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"chromium did not finish within {timeout_s}s") from error


def render_page(
    url: str,
    tmp_path: Path,
    *,
    wait_ms: int = 5000,
    window_size: tuple[int, int] = (1280, 900),
    timeout_s: float = 90.0,
) -> tuple[str, Path]:
    """Loads ``url`` once in headless chromium; returns its DOM after scripts ran, and a
    screenshot of the same page.

    Args:
        url: The page to open.
        tmp_path: Folder for the browser profile and the screenshot (``page.png``).
        wait_ms: Virtual time the page gets for client-side rendering and its requests.
        window_size: Browser window (width, height) in pixels for the screenshot.
        timeout_s: Wall-clock limit for the chromium run.

    Returns:
        The serialized DOM (``document.documentElement.outerHTML``) and the screenshot path.
    """
    screenshot = tmp_path / "page.png"
    width, height = window_size
    # One load for both: a second would make the server build the page again.
    args = ["--dump-dom", f"--screenshot={screenshot}", f"--window-size={width},{height}"]
    dom = _run([*args, f"--virtual-time-budget={wait_ms}", url], tmp_path, timeout_s).stdout
    if not screenshot.is_file():
        raise AssertionError(f"chromium wrote no screenshot at {screenshot}")
    return dom, screenshot
