"""The chat page as people use it (issue 15), in a real headless Chromium: the layout
from 320 px wide, a list that follows new messages like a chat app's, a state that
tells the truth, Escape and focus, links, local times, the text limit.

Waits are bounded waits for something expected (Playwright's ``expect``,
``wait_for_function``), never sleeps.
"""

from __future__ import annotations

import queue
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import (
    WAIT_S,
    ScriptedSocket,
    Watched,
    in_thread,
    join_as,
    scripted_page_server,
)
from tests.support.config import TEST_CONFIG
from tests.support.tcp import BlockingTcpClient
from trio_chat import serve

pytestmark = pytest.mark.slow

SERVER = replace(TEST_CONFIG, db=":memory:")
PEER = "Bartholomew-Maximilian-Fitzgeral"  # 32 characters
assert len(PEER) == 32
AT_BOTTOM = """() => {
    const box = document.getElementById("messages");
    return box.scrollHeight - box.scrollTop - box.clientHeight <= 2;
}"""
#: Two animation frames: the browser has run its scroll steps (scroll events fire
#: before animation frames), so the page has seen a scroll the test made.
TWO_FRAMES = "new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"


@contextmanager
def opened(browser: Browser, width: int = 1000, height: int = 700, *, name: str | None = None,
           **options: Any) -> Iterator[Watched]:
    """A page in its own browser context; with ``name``, remembered from a last visit."""
    context = browser.new_context(
        viewport={"width": width, "height": height}, color_scheme="light", **options
    )
    if name is not None:
        context.add_init_script(f"localStorage.setItem('trio-chat.name', {name!r})")
    try:
        watched = Watched(context.new_page())
        yield watched
        watched.assert_clean()
    finally:
        context.close()


def last_text(p: Page) -> Any:
    return p.locator("#messages .msg .text").last


# ---------------------------------------------------------------- layout


VIEWPORTS = [(320, 640), (360, 740), (390, 844), (1280, 800), (1920, 1080)]


def test_nothing_overflows_from_320_px_and_long_names_end_in_an_ellipsis(
    browser: Browser,
) -> None:
    long_word = "x" * 300
    url = "https://example.com/" + "a-long-path/" * 30
    with (
        in_thread(partial(serve, SERVER)) as bound,
        BlockingTcpClient(bound.tcp_port, WAIT_S) as peer,
    ):
        peer.send(f"/nick {PEER}")
        peer.recv_until(type="welcome")
        peer.send(f"no spaces: {long_word} and a link {url}")
        for width, height in VIEWPORTS:
            name = f"{width:04d}" + "W" * 28  # 32 of the widest letters
            with opened(browser, width, height, name=name) as page:
                p = page.page
                p.goto(bound.page_url)
                expect(p.locator("#state")).to_have_attribute("data-state", "online")
                expect(last_text(p)).to_contain_text("no spaces")
                p.fill("#text", "a message")
                assert p.evaluate("document.documentElement.scrollWidth") <= width, width
                send = p.locator("#send")
                expect(send).to_be_enabled()
                box = send.bounding_box()
                assert box is not None
                assert box["x"] >= 0 and box["x"] + box["width"] <= width, (width, box)
                assert box["y"] >= 0 and box["y"] + box["height"] <= height, (height, box)
                for chip in (p.locator("#me"), p.locator("#messages .who").last):
                    chip_box = chip.bounding_box()
                    assert chip_box is not None and chip_box["x"] + chip_box["width"] <= width
                # Your 32 Ws do not fit anywhere: they end in an ellipsis, in full on hover.
                me = p.locator("#me")
                assert me.evaluate("el => el.scrollWidth > el.clientWidth")
                assert me.evaluate("el => getComputedStyle(el).textOverflow") == "ellipsis"
                if width < 720:  # the user list is a drawer on phones
                    p.click("#online")
                    expect(p.locator("#users")).to_be_visible()
                    assert p.evaluate("document.documentElement.scrollWidth") <= width
                    p.click("#online")
                    expect(p.locator("#users")).to_be_hidden()


# ---------------------------------------------------------------- scrolling


def test_the_list_follows_new_messages_through_resizes_and_counts_them_when_scrolled_up(
    browser: Browser,
) -> None:
    with (
        in_thread(partial(serve, SERVER)) as bound,
        opened(browser, 390, 844) as page,
        BlockingTcpClient(bound.tcp_port, WAIT_S) as bob,
    ):
        p = page.page
        p.goto(bound.page_url)
        join_as(p, "Alice")
        bob.send("/nick Bob")
        bob.recv_until(type="welcome")
        for n in range(40):
            bob.send(f"message {n}")
        expect(last_text(p)).to_have_text("message 39")
        p.wait_for_function(AT_BOTTOM)

        # Rotations and window resizes: the end stays in view, and so do new messages.
        for width, height in [(844, 390), (390, 844), (1280, 800), (360, 740), (320, 640)]:
            p.set_viewport_size({"width": width, "height": height})
            p.wait_for_function(AT_BOTTOM)
            bob.send(f"after resizing to {width}x{height}")
            expect(last_text(p)).to_have_text(f"after resizing to {width}x{height}")
            p.wait_for_function(AT_BOTTOM)

        # Scrolled up, the reader stays put and a pill counts what came below.
        p.evaluate("document.getElementById('messages').scrollTop = 0")
        p.evaluate(TWO_FRAMES)
        jump = p.locator("#jump")
        expect(jump).to_be_hidden()
        bob.send("new one")
        expect(jump).to_have_text("↓ 1 new message")
        bob.send("new two")
        expect(jump).to_have_text("↓ 2 new messages")
        p.set_viewport_size({"width": 390, "height": 844})  # a resize keeps the place too
        bob.send("new three")
        expect(jump).to_have_text("↓ 3 new messages")
        assert p.evaluate("document.getElementById('messages').scrollTop") == 0
        jump.click()
        p.wait_for_function(AT_BOTTOM)
        expect(jump).to_be_hidden()
        expect(p.locator("#text")).to_be_focused()

        # Scrolling back down by hand clears the pill too; your own message always shows.
        p.evaluate("document.getElementById('messages').scrollTop = 0")
        p.evaluate(TWO_FRAMES)
        bob.send("one more")
        expect(jump).to_have_text("↓ 1 new message")
        p.evaluate("const box = document.getElementById('messages');"
                   "box.scrollTop = box.scrollHeight")
        expect(jump).to_be_hidden()
        p.evaluate("document.getElementById('messages').scrollTop = 0")
        p.evaluate(TWO_FRAMES)
        p.fill("#text", "my own")
        p.press("#text", "Enter")
        expect(last_text(p)).to_have_text("my own")
        p.wait_for_function(AT_BOTTOM)


# ---------------------------------------------------------------- states


WELCOME = {"type": "welcome", "user": "Alice", "users": ["Alice", "Old"], "clients_count": 2}
RED = "rgb(179, 38, 30)"  # --error, the offline dot


def dot_colour(p: Page) -> str:
    colour: str = p.evaluate(
        "getComputedStyle(document.getElementById('state'), '::before').backgroundColor"
    )
    return colour


def test_the_state_says_connecting_until_the_server_answers_and_offline_only_after(
    browser: Browser,
) -> None:
    sockets: queue.Queue[ScriptedSocket] = queue.Queue()
    with in_thread(partial(scripted_page_server, sockets)) as port:
        url = f"http://127.0.0.1:{port}/"
        state = None
        with opened(browser, name="Alice") as page:
            p = page.page
            state = p.locator("#state")
            p.goto(url)
            first = sockets.get(timeout=WAIT_S)
            assert first.receive() == {"type": "join", "user": "Alice", "batch": True}
            # Nothing heard yet: connecting, in a neutral colour, no count, no Send.
            expect(state).to_have_attribute("data-state", "connecting")
            expect(state).to_have_text("connecting…")
            assert dot_colour(p) != RED
            expect(p.locator("#online")).to_be_hidden()
            expect(p.locator("#send")).to_be_disabled()
            expect(p.locator("#join")).to_be_hidden()

            first.send(WELCOME)
            expect(state).to_have_attribute("data-state", "online")
            expect(state).to_have_text("online")
            expect(p.locator("#count")).to_have_text("2")

            first.close()  # a failure: now offline, with the retry counting down
            expect(state).to_have_attribute("data-state", "offline")
            expect(state).to_contain_text("retry in")
            assert dot_colour(p) == RED
            second = sockets.get(timeout=WAIT_S)
            second.receive_type("join")
            expect(state).to_have_attribute("data-state", "connecting")
            second.send(WELCOME)
            expect(state).to_have_attribute("data-state", "online")

        # A first visit: the page asks who is there while the name is chosen.
        with opened(browser) as page:
            p = page.page
            p.goto(url)
            socket = sockets.get(timeout=WAIT_S)
            assert socket.receive() == {"type": "who"}
            expect(p.locator("#join")).to_be_visible()
            expect(p.locator("#join-title")).to_have_text("Join the chat")
            expect(p.locator("#join-submit")).to_have_text("Join")
            expect(p.locator("#state")).to_have_attribute("data-state", "connecting")
            socket.send({"type": "users", "users": ["Ann", "Bob", "Cy"], "clients_count": 3})
            expect(p.locator("#state")).to_have_attribute("data-state", "online")
            expect(p.locator("#count")).to_have_text("3")
            p.fill("#name", "Alice")
            p.press("#name", "Enter")
            assert socket.receive_type("join") == {"type": "join", "user": "Alice", "batch": True}


# ---------------------------------------------------------------- keys and focus


def test_escape_closes_dialogs_and_the_drawer_and_focus_returns_to_the_message_box(
    browser: Browser,
) -> None:
    with in_thread(partial(serve, SERVER)) as bound, opened(browser, 390, 844) as page:
        p = page.page
        text = p.locator("#text")
        p.goto(bound.page_url)
        expect(p.locator("#join")).to_be_visible()
        expect(p.locator("#name")).to_be_focused()
        p.keyboard.press("Escape")  # a name is needed: the dialog stays
        p.keyboard.press("Escape")
        expect(p.locator("#join")).to_be_visible()
        join_as(p, "Alice")
        expect(p.locator("#join")).to_be_hidden()
        expect(text).to_be_focused()
        p.keyboard.type("typed without a click")
        expect(text).to_have_value("typed without a click")

        # Renaming: its own title; Escape cancels; focus goes back to the message box.
        p.click("#me")
        expect(p.locator("#join-title")).to_have_text("Change name")
        expect(p.locator("#join-submit")).to_have_text("Change")
        expect(p.locator("#name")).to_be_focused()
        p.keyboard.press("Escape")
        expect(p.locator("#join")).to_be_hidden()
        expect(text).to_be_focused()
        p.click("#me")
        p.fill("#name", "Alicia")
        p.press("#name", "Enter")
        expect(p.locator("#me")).to_have_text("Alicia")
        expect(text).to_be_focused()
        expect(text).to_have_value("typed without a click")  # the draft is kept

        # The user drawer (a phone's): Escape closes it.
        p.click("#online")
        expect(p.locator("#users")).to_be_visible()
        p.keyboard.press("Escape")
        expect(p.locator("#users")).to_be_hidden()
        expect(text).to_be_focused()

        # After a reload, keys go to the message box straight away.
        p.reload()
        expect(p.locator("#state")).to_have_attribute("data-state", "online")
        expect(text).to_be_focused()
        p.keyboard.type("after the reload")
        expect(text).to_have_value("after the reload")


# ---------------------------------------------------------------- links and times


LINKS = (
    "docs at https://example.com/a_(b)?q=1#frag, and http://x.test. Not javascript:alert(1)"
    " nor ftp://f.test nor <a href=https://evil.test>x</a> (see https://example.org/path)."
)
LINKED = ["https://example.com/a_(b)?q=1#frag", "http://x.test/", "https://evil.test/",
          "https://example.org/path"]


def chat(id: int, text: str, timestamp: str, **extra: Any) -> dict[str, Any]:
    return {"type": "chat", "id": id, "user": "Old", "text": text, "timestamp": timestamp,
            **extra}


@pytest.mark.parametrize(
    ("locale", "times"),
    [
        ("en-US", [r"6:05\sAM", r"6:30\sPM", r"11/25/26,\s6:30\sPM"]),
        ("de-DE", [r"06:05", r"18:30", r"25\.11\.26,\s18:30"]),
    ],
)
def test_links_are_safe_elements_and_times_read_as_the_locale_writes_them(
    browser: Browser, locale: str, times: list[str]
) -> None:
    sockets: queue.Queue[ScriptedSocket] = queue.Queue()
    with (
        in_thread(partial(scripted_page_server, sockets)) as port,
        opened(browser, name="Alice", locale=locale, timezone_id="UTC") as page,
    ):
        p = page.page
        p.clock.set_fixed_time("2026-11-26T20:00:00Z")
        p.goto(f"http://127.0.0.1:{port}/")
        socket = sockets.get(timeout=WAIT_S)
        socket.receive_type("join")
        socket.send(
            WELCOME,
            chat(1, "the day before", "2026-11-25T18:30:00.000Z", history=True),
            {"type": "history_end", "last_id": 1},
            chat(2, LINKS, "2026-11-26T06:05:00.000Z"),
            chat(3, "evening", "2026-11-26T18:30:00.000Z"),
        )
        expect(last_text(p)).to_have_text("evening")
        shown = p.locator("#messages .msg time").all_text_contents()
        assert [re.fullmatch(pattern, time) is not None for pattern, time in
                zip([times[2], times[0], times[1]], shown, strict=True)] == [True] * 3, shown

        text = p.locator("#messages .msg .text").nth(1)
        expect(text).to_have_text(LINKS)  # every character as sent
        links = text.locator("a")
        assert [link.get_attribute("href") for link in links.all()] == LINKED
        for link in links.all():
            assert link.get_attribute("rel") == "noopener noreferrer"
            assert link.get_attribute("target") == "_blank"
        assert text.locator("*").count() == len(LINKED)  # links and nothing else


# ---------------------------------------------------------------- the composer


def test_text_over_the_servers_limit_stays_in_the_box_and_shift_enter_is_a_new_line(
    browser: Browser,
) -> None:
    with (
        in_thread(partial(serve, replace(SERVER, max_text=10))) as bound,
        opened(browser, 390, 844) as page,
        BlockingTcpClient(bound.tcp_port, WAIT_S) as bob,
    ):
        p = page.page
        text, limit, send = p.locator("#text"), p.locator("#limit"), p.locator("#send")
        p.goto(bound.page_url)
        join_as(p, "Alice")
        bob.send("/nick Bob")
        bob.recv_until(type="welcome")

        text.fill("x" * 11)  # the welcome said max_text 10
        expect(limit).to_have_text("11/10")
        expect(limit).to_have_class(re.compile(r"\bover\b"))
        expect(send).to_be_disabled()
        text.press("Enter")
        expect(text).to_have_value("x" * 11)  # not sent, not lost
        text.press("Backspace")
        expect(limit).to_have_text("10/10")
        expect(send).to_be_enabled()
        text.press("Enter")
        # The first chat Bob gets from Alice: the 11 never went.
        assert bob.recv_until(type="chat", user="Alice")["text"] == "x" * 10
        expect(text).to_have_value("")
        expect(limit).to_be_hidden()

        text.type("one")
        text.press("Shift+Enter")
        text.type("two")
        text.press("Enter")
        assert bob.recv_until(type="chat", user="Alice")["text"] == "one\ntwo"

        # A paste far over the limit is kept whole (no maxlength cuts it).
        text.fill("y" * 10_000)
        expect(limit).to_have_text(re.compile(r"^10[,.\u202f\xa0]?000/10$"))
        assert text.evaluate("el => el.value.length") == 10_000


def test_a_reload_is_no_news_to_the_others(browser: Browser) -> None:
    """Reload without churn: the page keeps its seat's resume token for the tab
    (sessionStorage) and takes the seat back after a reload, so the others see no
    "left" and "joined"; the page shows the room's recent history again."""
    with (
        in_thread(partial(serve, SERVER)) as bound,
        opened(browser) as page,
        BlockingTcpClient(bound.tcp_port, WAIT_S) as bob,
    ):
        p = page.page
        bob.send('{"type":"join","user":"Bob"}')
        bob.recv_until(type="welcome")
        p.goto(bound.page_url)
        join_as(p, "Alice")
        bob.recv_until(type="system", event="join", name="Alice")
        p.fill("#text", "before")
        p.press("#text", "Enter")
        bob.recv_until(type="chat", text="before")
        for _ in range(2):
            p.reload()
            expect(p.locator("#state")).to_have_attribute("data-state", "online")
            expect(p.locator("#me")).to_have_text("Alice")
        p.fill("#text", "after")
        p.press("#text", "Enter")
        seen = [bob.recv()]
        while seen[-1].get("text") != "after":
            seen.append(bob.recv())
        assert [m["type"] for m in seen] == ["chat"]  # no left, no joined
        bob.send('{"type":"who"}')
        assert bob.recv_until(type="users")["users"] == ["Bob", "Alice"]
        expect(p.locator("#messages .msg .text")).to_have_text(["before", "after"])
        expect(p.locator("#messages .notice")).to_have_count(0)
