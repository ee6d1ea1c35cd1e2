"""A real browser (Debian's chromium driven by Playwright) and host pages on other origins."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.support.servers import ROOT, free_port
from tests.support.services import unavailable

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = ROOT / "test-artifacts"


# Module scope: Playwright's sync API keeps an event loop marked as running
# while it is started, which would stop the async tests that follow.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = os.environ.get("PUSHSITE_TEST_CHROMIUM", "/usr/bin/chromium")
    if not Path(executable).exists():
        unavailable(
            f"chromium is not installed at {executable} (scripts/test.sh installs it with apt-get as root)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 900, "height": 700})
    page = context.new_page()
    yield page
    context.close()


class HostSite:
    """Static pages served from another origin (another loopback port), like a partner's site."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def page(self, name: str, body: str) -> str:
        (self.root / name).write_text(
            f"<!doctype html><html><head><meta charset='utf-8'></head><body>{body}</body></html>"
        )
        return f"{self.origin}/{name}"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def host_site(tmp_path: Path) -> Iterator[HostSite]:
    site = HostSite(tmp_path)
    site.thread.start()
    yield site
    site.httpd.shutdown()
    site.httpd.server_close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
