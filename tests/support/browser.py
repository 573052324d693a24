"""The browser side of the page tests: headless Chromium driven by Playwright.

Playwright's sync API owns the main thread (its async API needs asyncio), so the Trio
servers run in a background thread with their own ``trio.run`` (:func:`in_thread`).
The ``browser`` and ``page`` fixtures are registered in tests/conftest.py.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_S = 20  # any one expected event (a bound, never slept); the machine is slow and shared
WAIT_MS = WAIT_S * 1000



# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (Debian package chromium; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Watched:
    """A page plus what went wrong in it: dialogs (an XSS would alert) and script errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.set_default_timeout(WAIT_MS)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def assert_clean(self) -> None:
        assert self.dialogs == [], "a dialog opened: injected script ran"
        assert self.errors == [], "the page threw"


@pytest.fixture
def page(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1000, "height": 620}, color_scheme="light")
    try:
        yield Watched(context.new_page())
    finally:
        context.close()


@contextmanager
def in_thread(start: Callable[..., Awaitable[object]]) -> Iterator[Any]:
    """Run ``await nursery.start(start)`` in a Trio thread; yield what it reports,
    cancel it on exit."""
    ready: queue.Queue[Any] = queue.Queue()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            value = await nursery.start(start)
            ready.put((value, trio.lowlevel.current_trio_token(), nursery.cancel_scope))

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:
            ready.put(exc)

    thread = threading.Thread(target=run, name="trio server", daemon=True)
    thread.start()
    item = ready.get(timeout=WAIT_S)
    if isinstance(item, BaseException):
        raise item
    value, token, scope = item
    try:
        yield value
    finally:
        trio.from_thread.run_sync(scope.cancel, trio_token=token)
        thread.join(WAIT_S)
        assert not thread.is_alive()


def join_as(page: Page, name: str, expect_state: str | None = "online") -> None:
    expect(page.locator("#join")).to_be_visible()
    page.fill("#name", name)
    page.press("#name", "Enter")
    if expect_state:
        expect(page.locator("#state")).to_have_attribute("data-state", expect_state)
