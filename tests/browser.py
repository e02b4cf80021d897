"""Driving the real dashboard: `streamlit run app.py` on a free loopback port,
Debian's Chromium through Playwright.

In CI (CI=true) a missing browser or Playwright is a failure, not a skip:
the browser test is the one that proves the product works for a person.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = ROOT / "tests" / "artifacts"


def require_browser():
    """Skip locally without Chromium/Playwright; fail in CI."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install playwright)")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(checkpoint_dir: Path, log_path: Path, env: dict | None = None):
    """`streamlit run app.py` on 127.0.0.1 with its own checkpoints folder; yields the URL.

    ``env``: more environment variables for the server (e.g. ``PANDA_DATA_DIR``).
    """
    port = free_port()
    env = {
        **os.environ,
        "PANDA_CHECKPOINT_DIR": str(checkpoint_dir),
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
        **(env or {}),
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "app.py",
                "--server.headless",
                "true",
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start; see {log_path}")
                time.sleep(0.3)
            yield url, process
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


@contextlib.contextmanager
def chromium_pages(count=1, width=1500, height=1000):
    """``count`` pages, each in its own browser context (its own Streamlit session)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield [
                browser.new_context(viewport={"width": width, "height": height}).new_page()
                for _ in range(count)
            ]
        finally:
            browser.close()


@contextlib.contextmanager
def chromium_page(width=1500, height=1000):
    with chromium_pages(1, width, height) as pages:
        yield pages[0]


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def button(page, key: str):
    """The button Streamlit renders for widget ``key`` ("start", "pause", "step_100",
    "apply"...). By key, not by label: the assistant offers its own "Pause" and "Apply α
    = ..." buttons, so a label can name two buttons on one page. Visible ones only:
    Streamlit keeps a hidden copy of a button with a tooltip (to measure its width)."""
    return page.locator(f".st-key-{key} button").filter(visible=True)
