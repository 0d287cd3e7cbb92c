"""Debian's headless chromium driven through Playwright for Python (`executable_path`: no browser download).

Only `pip install playwright` is needed, never `playwright install`: the browser is the system's
chromium, installed by `browser_deps.sh` when missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Page, async_playwright, expect

__all__ = ["BROWSER_DEPS", "chromium_path", "ensure_chromium", "page_in_chromium"]

BROWSER_DEPS = Path(__file__).parent / "browser_deps.sh"
# What this machine needs: no sandbox (root in a container), no GPU, nothing fetched in the background.
FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
TIMEOUT_MS = 20_000  # the machine is shared: waits (clicks, `expect`) get 20 s, not Playwright's 5
expect.set_options(timeout=TIMEOUT_MS)


def chromium_path() -> str | None:
    """Debian's chromium, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def ensure_chromium() -> tuple[str | None, str]:
    """Chromium's path (or None) and how it was found, installing Debian's package with `browser_deps.sh` when missing."""
    found = chromium_path()
    if found is not None:
        return found, "installed"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "chromium is not installed and this is not root with apt-get; run tests/e2e/approval/browser_deps.sh"
    done = subprocess.run(["bash", str(BROWSER_DEPS)], check=False, capture_output=True, text=True, timeout=800)
    found = chromium_path()
    if found is None:
        return None, f"browser_deps.sh could not install chromium (exit {done.returncode}): {(done.stderr or done.stdout)[-400:]}"
    return found, "installed now by browser_deps.sh"


@asynccontextmanager
async def page_in_chromium(executable: str, *, width: int = 1280, height: int = 900) -> AsyncIterator[Page]:
    """One page of a fresh headless chromium; the browser closes on exit."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, headless=True, args=list(FLAGS))
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            await browser.close()
