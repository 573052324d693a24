"""The browser side of the page tests: headless Chromium driven by Playwright.

Playwright's sync API owns the main thread (its async API needs asyncio), so the Trio
servers run in a background thread with their own ``trio.run`` (:func:`in_thread`).
The ``browser`` and ``page`` fixtures are registered in tests/conftest.py.
:func:`scripted_page_server` serves the real page and lets the test play the server's
side of each WebSocket by hand (:class:`ScriptedSocket`), for what a real server
cannot be made to do on cue: hold its answer, send a fixed timestamp, close.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import Browser, Page, expect, sync_playwright
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_server_stream

from trio_chat import Config
from trio_chat.protocol import encode
from trio_chat.transports import http

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
    """Type ``name`` into the name dialog; with ``expect_state``, wait until joined
    (the page is online before it joins: it asks ``who`` while the name is typed)."""
    expect(page.locator("#join")).to_be_visible()
    page.fill("#name", name)
    page.press("#name", "Enter")
    if expect_state:
        expect(page.locator("#me")).to_have_text(name)
        expect(page.locator("#state")).to_have_attribute("data-state", expect_state)


# ---------------------------------------------------------------- a hand-played server


class ScriptedSocket:
    """One WebSocket from the page; the test thread reads what the page sent and
    sends the server's side."""

    def __init__(self, ws: WebSocketConnection, token: trio.lowlevel.TrioToken) -> None:
        self._ws = ws
        self._token = token
        self.received: queue.Queue[dict[str, Any] | None] = queue.Queue()  # None: closed

    def receive(self) -> dict[str, Any]:
        """The next message the page sent (waits, bounded)."""
        message = self.received.get(timeout=WAIT_S)
        assert message is not None, "the page closed the socket"
        return message

    def receive_type(self, kind: str) -> dict[str, Any]:
        """The next message of this type, skipping the others (``who``, ``ping``)."""
        while (message := self.receive())["type"] != kind:
            pass
        return message

    def send(self, *messages: dict[str, Any] | str) -> None:
        """One frame of these messages, one per line (as for ``"batch": true``)."""
        frame = "\n".join(m if isinstance(m, str) else encode(m) for m in messages)
        trio.from_thread.run(self._ws.send_message, frame, trio_token=self._token)

    def close(self, code: int = 1012, reason: str = "restarting") -> None:
        trio.from_thread.run(self._ws.aclose, code, reason, trio_token=self._token)


async def scripted_page_server(
    sockets: queue.Queue[ScriptedSocket], *, task_status: trio.TaskStatus[int]
) -> None:
    """Serves the real page on a free port (reported); each WebSocket the page opens is
    put in ``sockets`` for the test to play."""
    config = Config()
    token = trio.lowlevel.current_trio_token()

    async def handler(stream: trio.SocketStream) -> None:
        async with stream, trio.open_nursery() as nursery:
            upgrade = await http.serve_http(stream, config)
            if upgrade is None:
                return
            ws = await (await wrap_server_stream(nursery, upgrade)).accept()
            socket = ScriptedSocket(ws, token)
            sockets.put(socket)
            try:
                while True:
                    socket.received.put(json.loads(await ws.get_message()))
            except ConnectionClosed:
                socket.received.put(None)
            # The nursery ends with trio-websocket's reader, once the closing handshake
            # is over (an aclose from the test waits for it).

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        task_status.started(listeners[0].socket.getsockname()[1])
