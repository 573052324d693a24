"""The page's rooms and direct messages in a real headless Chromium (the server in a
thread: tests/support/browser.py): the room list and its unread counts, switching, the
URL fragment, the topic under the room name, a direct conversation between two pages,
and the rooms drawer on a phone-sized screen."""

from __future__ import annotations

from functools import partial

import pytest
from playwright.sync_api import Browser, expect

from tests.support.browser import WAIT_S, Watched, in_thread, join_as
from tests.support.tcp import BlockingTcpClient
from trio_chat import Config, serve

pytestmark = pytest.mark.slow


def test_rooms_switch_count_unread_and_follow_the_fragment(page: Watched) -> None:
    p = page.page
    rooms = p.locator("#room-list li")
    with in_thread(partial(serve, Config(tcp_port=0, ws_port=0))) as bound:
        p.goto(bound.page_url + "#dev")  # the fragment opens #dev (entered with #lobby)
        join_as(p, "Alice")
        expect(p.locator("#room-title")).to_have_text("#dev")
        expect(rooms).to_have_text(["#dev", "#lobby"])

        with BlockingTcpClient(bound.tcp_port, WAIT_S) as bob:
            bob.send('{"type":"join","user":"Bob","room":"#dev"}')
            bob.recv_until(type="history_end")
            expect(p.locator("#user-list li")).to_have_text(["Alice", "Bob"])
            bob.send('{"type":"topic","room":"#dev","topic":"release on Friday"}')
            expect(p.locator("#topic")).to_have_text("release on Friday")
            bob.send('{"type":"join","room":"#lobby"}')
            bob.recv_until(type="history_end", room="#lobby")
            bob.send('{"type":"chat","text":"lunch?"}')
            bob.send('{"type":"chat","text":"anyone?"}')
            lobby = rooms.filter(has_text="#lobby")
            expect(lobby.locator(".badge")).to_have_text("2")  # unread while #dev shows
            expect(p.locator("#messages")).not_to_contain_text("lunch?")

            lobby.click()
            expect(p.locator("#room-title")).to_have_text("#lobby")
            expect(p.locator("#messages .msg .text")).to_have_text(["lunch?", "anyone?"])
            expect(lobby.locator(".badge")).to_have_count(0)
            assert p.evaluate("location.hash") == "#lobby"
            p.fill("#text", "yes")
            p.press("#text", "Enter")
            said = bob.recv_until(type="chat", user="Alice")
            assert said["text"] == "yes" and said["room"] == "#lobby"

            # Leaving every room leaves the last one shown, with a way back in.
            p.click("#part")
            expect(rooms).to_have_text(["#dev"])
            expect(p.locator("#room-title")).to_have_text("#dev")
            p.click("#part")
            expect(rooms).to_have_text(["#lobby"])
            expect(p.locator("#part")).to_have_text("Join")
            p.click("#part")
            expect(p.locator("#part")).to_have_text("Leave")
            bob.recv_until(type="system", room="#lobby", event="join", name="Alice")
            p.locator("#room-list li", has_text="#lobby").click()
            p.evaluate("location.hash = '#dev'")  # back into #dev, by its fragment
            expect(p.locator("#topic")).to_have_text("release on Friday")

            # Another fragment: the page enters (creates) that room and shows it.
            p.evaluate("location.hash = '#ops'")
            expect(p.locator("#room-title")).to_have_text("#ops")
            expect(rooms).to_have_text(["#lobby", "#dev", "#ops"])
            # The form joins (or creates) a room too; a bad name is said so.
            p.fill("#room-name", "not a room!")
            p.press("#room-name", "Enter")
            expect(p.locator("#room-error")).to_contain_text("1-32")
            p.fill("#room-name", "qa")
            p.press("#room-name", "Enter")
            expect(p.locator("#room-title")).to_have_text("#qa")
            assert p.evaluate("location.hash") == "#qa"
            p.click("#part")  # leave #qa: another room shows
            expect(rooms).to_have_text(["#lobby", "#dev", "#ops"])
            expect(p.locator("#room-title")).to_have_text("#lobby")

            # A reload goes back to the same rooms, in the room of the fragment.
            assert p.evaluate("location.hash") == "#lobby"
            p.evaluate("location.hash = '#dev'")
            expect(p.locator("#room-title")).to_have_text("#dev")
            p.reload()
            expect(p.locator("#me")).to_have_text("Alice")
            expect(rooms).to_have_text(["#dev", "#lobby", "#ops"])
            expect(p.locator("#topic")).to_have_text("release on Friday")
    page.assert_clean()


def test_a_direct_message_between_two_pages(browser: Browser) -> None:
    contexts = [browser.new_context(viewport={"width": 1000, "height": 620}) for _ in "ab"]
    try:
        alice, carol = (Watched(context.new_page()) for context in contexts)
        with in_thread(partial(serve, Config(tcp_port=0, ws_port=0))) as bound:
            alice.page.goto(bound.page_url)
            join_as(alice.page, "Alice")
            carol.page.goto(bound.page_url)
            join_as(carol.page, "Carol")
            a, c = alice.page, carol.page
            # Clicking a name opens a conversation with them.
            a.locator("#user-list li", has_text="Carol").click()
            expect(a.locator("#room-title")).to_have_text("@Carol")
            a.fill("#text", "psst, Carol")
            a.press("#text", "Enter")
            expect(a.locator("#messages .msg .text")).to_have_text(["psst, Carol"])
            dm = c.locator("#room-list li", has_text="@Alice")
            expect(dm.locator(".badge")).to_have_text("1")
            expect(c.locator("#room-title")).to_have_text("#lobby")  # not pulled away
            dm.click()
            expect(c.locator("#messages .msg .text")).to_have_text(["psst, Carol"])
            c.fill("#text", "hi Alice")
            c.press("#text", "Enter")
            expect(a.locator("#messages .msg .text")).to_have_text(["psst, Carol", "hi Alice"])
            # The room saw none of it.
            a.locator("#room-list li", has_text="#lobby").click()
            expect(a.locator("#messages")).not_to_contain_text("psst")
        alice.assert_clean()
        carol.assert_clean()
    finally:
        for context in contexts:
            context.close()


@pytest.mark.parametrize("width", [320, 390])
def test_the_rooms_drawer_on_a_phone_holds_the_layout(browser: Browser, width: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": 700})
    try:
        watched = Watched(context.new_page())
        p = watched.page
        with in_thread(partial(serve, Config(tcp_port=0, ws_port=0))) as bound:
            p.goto(bound.page_url + "#a-very-long-room-name-of-32-char")
            join_as(p, "Alice")
            expect(p.locator("#rooms")).to_be_hidden()
            p.click("#rooms-toggle")
            expect(p.locator("#rooms")).to_be_visible()
            expect(p.locator("#room-list li")).to_have_count(2)
            assert p.evaluate("document.documentElement.scrollWidth") <= width
            p.locator("#room-list li", has_text="#lobby").click()
            expect(p.locator("#rooms")).to_be_hidden()  # picking one closes the drawer
            expect(p.locator("#room-title")).to_have_text("#lobby")
            assert p.evaluate("document.documentElement.scrollWidth") <= width
        watched.assert_clean()
    finally:
        context.close()
