"""SIGTERM with browser tabs open: no new streams, the open ones ended, out within 2 s."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from tests.support.servers import ServerProcess, Site

TABS = 3


def test_sigterm_with_tabs_open_refuses_new_streams_and_exits_within_two_seconds(
    browser: Browser, site: Site, artifacts: Path
) -> None:
    site.manage("create_channel", "shutdown-watch", "--title", "Watched during shutdown")
    dying = ServerProcess(site, name="dying").start()
    contexts = [browser.new_context() for _ in range(TABS)]  # one connection pool each
    try:
        pages: list[Page] = []
        for context in contexts:
            page = context.new_page()
            page.goto(f"{dying.url}/channels/shutdown-watch/")
            expect(page.locator("#status")).to_have_text("Live", timeout=10_000)
            pages.append(page)
        assert dying.process is not None
        started = time.monotonic()
        dying.process.send_signal(signal.SIGTERM)
        exit_code = dying.process.wait(timeout=15)
        elapsed = time.monotonic() - started
        print(f"SIGTERM with {TABS} tabs open: exited ({exit_code}) in {elapsed:.2f}s")
        assert exit_code in {0, -signal.SIGTERM}
        assert elapsed < 2.0
        log = dying.log()
        assert "graceful shutdown exceeded" not in log
        assert "Exception in ASGI application" not in log
        # Every tab came straight back (the client reconnects at once on pushsite.close)
        # and was refused: nothing opened after the shutdown began.
        after = log[log.index("Shutting down: ending") :]
        assert "Stream opened" not in after
        for page in pages:
            expect(page.locator("#status")).not_to_have_text("Live", timeout=5_000)

        # The process comes back (a restart, or another process behind the balancer):
        # the tabs find it by themselves, without a reload.
        back = ServerProcess(site, name="back", port=dying.port).start()
        try:
            for page in pages:
                expect(page.locator("#status")).to_have_text("Live", timeout=40_000)
            pages[0].screenshot(path=artifacts / "after-restart.png")
        finally:
            back.stop()
    finally:
        for context in contexts:
            context.close()
        dying.kill()
