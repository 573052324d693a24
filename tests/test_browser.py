"""The chat page in a real headless Chromium, driven by Playwright (the Trio servers
in a thread: tests/support/browser.py); the raw-TCP peer is a plain blocking socket.
Set ``TRIO_CHAT_SCREENSHOT=path.png`` (and ``TRIO_CHAT_SCREENSHOT_PHONE``, at 390x844)
to keep the screenshots taken mid-conversation (``make screenshot`` refreshes
``docs/screenshot.png`` and ``docs/screenshot-phone.png``). The page's layout, scrolling,
states, keys and links: tests/test_page_ui.py.
"""

from __future__ import annotations

import json
import os
import queue
import re
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import Browser, expect
from trio_websocket import wrap_server_stream

from tests.support.browser import WAIT_S, Watched, in_thread, join_as
from tests.support.tcp import BlockingTcpClient
from tests.support.tls import TlsFiles
from trio_chat import Config, serve
from trio_chat.cluster import open_cluster
from trio_chat.protocol import encode
from trio_chat.transports import http

# ---------------------------------------------------------------- the tests


pytestmark = pytest.mark.slow

XSS = "<img src=x onerror=alert(1)>"


def test_page_chats_with_a_tcp_client_and_reconnects(page: Watched, tmp_path: Path) -> None:
    p = page.page
    state = p.locator("#state")
    last_msg = p.locator("#messages .msg").last
    with in_thread(partial(serve, Config(tcp_port=0, ws_port=0))) as bound:
        p.goto(bound.page_url)
        join_as(p, "System", expect_state=None)  # reserved: the server says why
        expect(p.locator("#join-error")).to_contain_text("reserved")
        join_as(p, "Alice")
        expect(p.locator("#me")).to_have_text("Alice")

        with BlockingTcpClient(bound.tcp_port, WAIT_S) as bob:
            bob.send("/nick Bob")
            assert bob.recv_until(type="welcome")["users"] == ["Alice", "Bob"]
            expect(p.locator("#count")).to_have_text("2")
            expect(p.locator("#user-list li")).to_have_text(["Alice", "Bob"])
            expect(p.locator("#messages .notice").last).to_contain_text("Bob joined the chat")

            bob.send("hi Alice, how is the Trio port going?")
            expect(last_msg.locator(".who")).to_have_text("Bob")
            expect(last_msg.locator(".text")).to_have_text("hi Alice, how is the Trio port going?")
            expect(last_msg.locator("time")).to_have_text(re.compile(r"\d\d"))

            p.fill("#text", "Nearly done: this page is served by trio-chat itself")
            p.press("#text", "Enter")
            said = bob.recv_until(type="chat", user="Alice")
            assert said["text"] == "Nearly done: this page is served by trio-chat itself"
            expect(p.locator("#text")).to_have_value("")
            expect(last_msg).to_have_class(re.compile(r"\bmine\b"))

            bob.send(XSS)
            expect(last_msg.locator(".text")).to_have_text(XSS)
            assert p.locator("#messages img").count() == 0

            bob.send("the docs: https://trio.readthedocs.io/ (structured concurrency)")
            link = last_msg.locator(".text a")
            expect(link).to_have_attribute("href", "https://trio.readthedocs.io/")
            p.fill("#text", "Trying it on my phone next")

            shot = Path(os.environ.get("TRIO_CHAT_SCREENSHOT") or tmp_path / "page.png")
            p.screenshot(path=str(shot))
            assert shot.read_bytes().startswith(b"\x89PNG")

            # Phone width: one column, nothing wider than the screen, user list on demand.
            p.set_viewport_size({"width": 390, "height": 844})
            phone = Path(os.environ.get("TRIO_CHAT_SCREENSHOT_PHONE") or tmp_path / "phone.png")
            p.screenshot(path=str(phone))
            assert phone.read_bytes().startswith(b"\x89PNG")
            p.fill("#text", "")
            assert p.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            expect(p.locator("#users")).to_be_hidden()
            p.click("#online")
            expect(p.locator("#users")).to_be_visible()
            expect(p.locator("#user-list li")).to_have_text(["Alice", "Bob"])
            p.set_viewport_size({"width": 1000, "height": 620})

        expect(p.locator("#messages .notice").last).to_contain_text("Bob left the chat")
        expect(p.locator("#count")).to_have_text("1")

    # The server is gone: the page says so, then comes back by itself on restart.
    expect(state).not_to_have_attribute("data-state", "online")
    expect(p.locator("#messages .notice").last).to_contain_text("Connection lost")
    with in_thread(partial(serve, Config(tcp_port=0, ws_port=bound.ws_port))) as again:
        expect(state).to_have_attribute("data-state", "online")
        with BlockingTcpClient(again.tcp_port, WAIT_S) as bob:
            bob.send("/nick Bob")
            assert bob.recv_until(type="welcome")["users"] == ["Alice", "Bob"]
            p.fill("#text", "back again")
            p.press("#text", "Enter")
            assert bob.recv_until(type="chat", user="Alice")["text"] == "back again"

        # The name is remembered: a reload joins straight away.
        p.reload()
        expect(state).to_have_attribute("data-state", "online")
        expect(p.locator("#join")).to_be_hidden()
        expect(p.locator("#me")).to_have_text("Alice")
    page.assert_clean()


def test_remembered_name_waits_for_its_stale_session(page: Watched) -> None:
    """A reload can reach the server before the old connection's leave does: with a
    remembered name the page retries instead of asking for another one."""
    p = page.page
    p.context.add_init_script("localStorage.setItem('trio-chat.name', 'Alice')")
    with in_thread(partial(serve, Config(tcp_port=0, ws_port=0))) as bound:
        with BlockingTcpClient(bound.tcp_port, WAIT_S) as stale:
            stale.send("/nick Alice")
            stale.recv_until(type="welcome")
            p.goto(bound.page_url)
            expect(p.locator("#state")).to_contain_text("retry")
            expect(p.locator("#join")).to_be_hidden()
        expect(p.locator("#state")).to_have_attribute("data-state", "online")
        expect(p.locator("#me")).to_have_text("Alice")
        expect(p.locator("#join")).to_be_hidden()
    page.assert_clean()


def lines(*messages: Any) -> str:
    """Several messages in one frame, as a server does for ``"batch": true`` joins."""
    return "\n".join(m if isinstance(m, str) else encode(m) for m in messages)


def chat(id: int, text: str, *, history: bool = False) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "chat", "id": id, "user": "Old", "text": text,
        "timestamp": "2026-11-26T18:00:00.000Z",
    }
    if history:
        message["history"] = True
    return message


WELCOME = {"type": "welcome", "user": "Alice", "users": ["Alice", "Old"], "clients_count": 2}


async def scripted_server(
    joins: queue.Queue[Any], chats: queue.Queue[Any], *, task_status: trio.TaskStatus[int]
) -> None:
    """Serves the real page but plays a later protocol version on the WebSocket:
    batched frames, history with ids, ``history_end``, types and lines the page does
    not know. The first connection is closed after the page says something."""
    config = Config()
    connections = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal connections
        async with stream, trio.open_nursery() as nursery:
            upgrade = await http.serve_http(stream, config)
            if upgrade is None:
                return
            ws = await (await wrap_server_stream(nursery, upgrade)).accept()
            connections += 1
            # Before a name is chosen the page asks who is there (no answer here).
            while (message := json.loads(await ws.get_message()))["type"] != "join":
                pass
            joins.put(message)
            if connections == 1:
                await ws.send_message(lines(
                    WELCOME,
                    chat(1, "from before 1", history=True),
                    chat(2, "from before 2", history=True),
                    {"type": "history_end"},
                    {"type": "reaction", "emoji": "+1"},
                    "this line is not JSON",
                    "[1, 2]",
                    {"type": "chat", "user": "Old", "text": "no id, no timestamp"},
                ))
                await ws.send_message(encode(chat(3, "live 3")))
                chats.put(json.loads(await ws.get_message()))
                await ws.aclose(1012, "restarting")
            else:
                await ws.send_message(lines(
                    WELCOME,
                    chat(3, "live 3", history=True),  # already shown: skipped
                    # The one shown without an id, now with one: the same message.
                    {"type": "chat", "id": 4, "user": "Old", "text": "no id, no timestamp",
                     "history": True},
                    chat(5, "from before 5", history=True),
                    {"type": "history_end"},
                    chat(6, "live 6"),
                ))
                await trio.sleep_forever()
            nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        task_status.started(listeners[0].socket.getsockname()[1])


def test_page_speaks_batches_history_and_since(page: Watched) -> None:
    p = page.page
    joins: queue.Queue[Any] = queue.Queue()
    chats: queue.Queue[Any] = queue.Queue()
    texts = p.locator("#messages .msg .text")
    with in_thread(partial(scripted_server, joins, chats)) as port:
        p.goto(f"http://127.0.0.1:{port}/")
        join_as(p, "Alice")
        assert joins.get(timeout=WAIT_S) == {"type": "join", "user": "Alice", "batch": True}
        expect(texts).to_have_text(
            ["from before 1", "from before 2", "no id, no timestamp", "live 3"]
        )
        expect(p.locator("#messages .msg.history")).to_have_count(2)
        expect(p.locator("#messages .error")).to_have_count(0)
        expect(p.locator("#count")).to_have_text("2")

        p.fill("#text", "hello")
        p.press("#text", "Enter")
        assert chats.get(timeout=WAIT_S) == {"type": "chat", "text": "hello"}

        # Closed by the server: the page rejoins asking for what came after id 3.
        rejoin = joins.get(timeout=WAIT_S)
        assert rejoin == {"type": "join", "user": "Alice", "batch": True, "since": 3}
        expect(texts).to_have_text(
            ["from before 1", "from before 2", "no id, no timestamp", "live 3",
             "from before 5", "live 6"]
        )
        expect(p.locator("#messages .msg.history")).to_have_count(3)
        expect(p.locator("#state")).to_have_attribute("data-state", "online")
    page.assert_clean()


# ---------------------------------------------------------------- TLS and the Origin check


def test_page_over_https_chats_over_wss(browser: Browser, tls: TlsFiles) -> None:
    """With --tls-cert the page is https:// and its socket wss:// (its own origin is
    https://host:port), and a TLS line client shares the room."""
    config = tls.server_config(Config(tcp_port=0, ws_port=0))
    context = browser.new_context(ignore_https_errors=True)  # trustme's CA is not Chromium's
    try:
        watched = Watched(context.new_page())
        p = watched.page
        with in_thread(partial(serve, config)) as bound:
            assert bound.page_url.startswith("https://")
            p.goto(bound.page_url)
            join_as(p, "Alice")
            with BlockingTcpClient(bound.tcp_port, WAIT_S) as bob:
                bob.sock = tls.client_context().wrap_socket(bob.sock, server_hostname="127.0.0.1")
                bob.send("/nick Bob")
                bob.recv_until(type="welcome")
                p.fill("#text", "hello over wss")
                p.press("#text", "Enter")
                assert bob.recv_until(type="chat", user="Alice")["text"] == "hello over wss"
                bob.send("hello over tls")
                expect(p.locator("#messages .msg").last.locator(".text")).to_have_text(
                    "hello over tls"
                )
        watched.assert_clean()
    finally:
        context.close()


OPEN_SOCKET = """url => new Promise(resolve => {
    const ws = new WebSocket(url);
    ws.onopen = () => { ws.close(); resolve("open"); };
    ws.onerror = () => resolve("refused");
})"""


def test_a_foreign_page_cannot_open_a_socket(page: Watched) -> None:
    """A page from another origin (another trio-chat here) gets 403 on the upgrade,
    unless --allowed-origin lists it; the page's own origin always works."""
    p = page.page
    with in_thread(partial(serve, Config(tcp_port=0, ws_port=0))) as foreign:
        p.goto(foreign.page_url)
        assert p.evaluate(OPEN_SOCKET, foreign.ws_url) == "open"
        with in_thread(partial(serve, Config(tcp_port=0, ws_port=0))) as target:
            assert p.evaluate(OPEN_SOCKET, target.ws_url) == "refused"
        foreign_origin = foreign.page_url.rstrip("/")
        allowing = Config(tcp_port=0, ws_port=0, allowed_origins=(foreign_origin,))
        with in_thread(partial(serve, allowing)) as target:
            assert p.evaluate(OPEN_SOCKET, target.ws_url) == "open"


async def two_cluster_servers(redis_url: str, *, task_status: Any) -> None:
    """Two servers sharing one room through Redis, in this Trio thread."""
    config = Config(tcp_port=0, ws_port=0, redis=redis_url)
    async with (
        open_cluster(config) as a,
        open_cluster(config) as b,
        trio.open_nursery() as nursery,
    ):
        bound_a = await nursery.start(partial(serve, config, rooms=a.rooms))
        bound_b = await nursery.start(partial(serve, config, rooms=b.rooms))
        task_status.started((bound_a, bound_b))


def test_page_on_one_server_chats_with_tcp_on_another(page: Watched, redis_server: Any) -> None:
    """--redis: the page on server B, a raw-TCP client on server A, one room."""
    p = page.page
    last_msg = p.locator("#messages .msg").last
    with in_thread(partial(two_cluster_servers, redis_server.url)) as (a, b):
        p.goto(b.page_url)
        join_as(p, "Alice")
        with BlockingTcpClient(a.tcp_port, WAIT_S) as bob:
            bob.send("/nick Bob")
            assert sorted(bob.recv_until(type="welcome")["users"]) == ["Alice", "Bob"]
            expect(p.locator("#count")).to_have_text("2")
            expect(p.locator("#messages .notice").last).to_contain_text("Bob joined the chat")
            bob.send("hello from server A")
            expect(last_msg.locator(".who")).to_have_text("Bob")
            expect(last_msg.locator(".text")).to_have_text("hello from server A")
            p.fill("#text", "hello from the page on server B")
            p.press("#text", "Enter")
            said = bob.recv_until(type="chat", user="Alice")
            assert said["text"] == "hello from the page on server B" and said["id"] > 0
            expect(last_msg).to_have_class(re.compile(r"\bmine\b"))
        expect(p.locator("#messages .notice").last).to_contain_text("Bob left the chat")
        expect(p.locator("#count")).to_have_text("1")
    page.assert_clean()
