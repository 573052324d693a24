"""The chat page (headless Chromium) and moderation: a kicked user leaves its list,
and a page banned from the server says so and stops instead of reconnecting."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from playwright.sync_api import expect

from tests.support.browser import WAIT_S, Watched, in_thread, join_as
from tests.support.moderation import PASSWORD
from tests.support.tcp import BlockingTcpClient
from trio_chat import Config, serve


def test_the_page_follows_kicks_and_stops_when_banned(page: Watched, tmp_path: Path) -> None:
    p = page.page
    config = Config(tcp_port=0, ws_port=0, db=str(tmp_path / "chat.db"), admins=("Root",))
    with in_thread(partial(serve, config)) as bound:
        p.goto(bound.page_url)
        join_as(p, "Alice")
        with (
            BlockingTcpClient(bound.tcp_port, WAIT_S) as root,
            BlockingTcpClient(bound.tcp_port, WAIT_S) as bob,
        ):
            root.send("/nick Root")
            root.recv_until(type="welcome")
            root.send(json.dumps({"type": "register", "user": "Root", "password": PASSWORD}))
            root.recv_until(type="token")
            bob.send("/nick Bob")
            bob.recv_until(type="welcome")
            expect(p.locator("#user-list li")).to_have_text(["Alice", "Bob", "Root"])
            root.send("/kick Bob enough")
            expect(p.locator("#messages .notice").last).to_contain_text(
                "Bob was kicked from #lobby by Root: enough"
            )
            expect(p.locator("#user-list li")).to_have_text(["Alice", "Root"])
            root.send("/ban * Alice spam")
            root.recv_until(type="system", event="ban", name="Alice")
        expect(p.locator("#messages .notice.error").last).to_contain_text(
            "you are banned from this server: spam"
        )
        expect(p.locator("#state")).to_have_attribute("data-state", "offline")
        # No reconnection scheduled (it would say "retry in N s"): it would be refused.
        expect(p.locator("#state")).to_have_text("banned")
    page.assert_clean()


def test_a_page_kicked_from_one_room_stays_in_the_others(page: Watched, tmp_path: Path) -> None:
    p = page.page
    config = Config(tcp_port=0, ws_port=0, db=str(tmp_path / "chat.db"), admins=("Root",))
    with in_thread(partial(serve, config)) as bound:
        p.goto(bound.page_url + "#dev")  # #dev shown, #lobby too
        join_as(p, "Alice")
        rooms = p.locator("#room-list li")
        expect(rooms).to_have_text(["#dev", "#lobby"])
        with BlockingTcpClient(bound.tcp_port, WAIT_S) as root:
            root.send(json.dumps({"type": "register", "user": "Root", "password": PASSWORD,
                                  "room": "#dev"}))
            root.recv_until(type="token")
            root.send(json.dumps({"type": "kick", "room": "#dev", "user": "Alice",
                                  "reason": "off topic"}))
            root.recv_until(type="system", event="kick", name="Alice")
            # Out of #dev (the notice said so; no leave comes), still in #lobby.
            expect(rooms).to_have_text(["#lobby"])
            expect(p.locator("#room-title")).to_have_text("#lobby")
            root.send('{"type":"join","room":"#lobby"}')
            root.recv_until(type="history_end", room="#lobby")
            root.send('{"type":"chat","text":"still here?"}')
            expect(p.locator("#messages .msg .text").last).to_have_text("still here?")
    page.assert_clean()


def test_an_op_moderates_from_the_user_list(page: Watched, tmp_path: Path) -> None:
    """The welcome's role shows the menu to an op only; its buttons send the
    moderation messages (with the reason typed in the menu; a mute for 10 minutes)."""
    p = page.page
    config = Config(tcp_port=0, ws_port=0, db=str(tmp_path / "chat.db"))
    with in_thread(partial(serve, config)) as bound:
        p.goto(bound.page_url + "#ops")
        expect(p.locator("#join")).to_be_visible()
        p.click("#modes button[data-mode=register]")
        p.fill("#name", "Olga")
        p.fill("#password", PASSWORD)
        p.press("#password", "Enter")
        expect(p.locator("#me")).to_have_attribute("data-account", "Olga")  # welcomed
        expect(p.locator("#room-title")).to_have_text("#ops")
        with BlockingTcpClient(bound.tcp_port, WAIT_S) as bob:
            bob.send(json.dumps({"type": "join", "user": "Bob", "room": "#ops"}))
            bob.recv_until(type="history_end", room="#ops")
            bob_item = p.locator("#user-list li[data-user=Bob]")
            expect(bob_item).to_be_visible()
            # Olga created #ops: she is its op, so Bob's entry has the menu.
            bob_item.locator("summary").click()
            bob_item.locator(".mod-reason").fill("off topic")
            bob_item.locator("button[data-act=mute]").click()
            muted = bob.recv_until(type="system", event="mute", name="Bob")
            assert (muted["by"], muted["reason"], muted["room"]) == ("Olga", "off topic", "#ops")
            bob.send(json.dumps({"type": "chat", "room": "#ops", "text": "hello?"}))
            assert bob.recv_until(type="error")["code"] == "muted"
            bob_item.locator("summary").click()
            bob_item.locator(".mod-reason").fill("enough")
            bob_item.locator("button[data-act=kick]").click()
            kicked = bob.recv_until(type="system", event="kick", name="Bob")
            assert (kicked["by"], kicked["reason"]) == ("Olga", "enough")
            expect(p.locator("#user-list li[data-user=Bob]")).to_have_count(0)
            # In #lobby, which Olga did not create, she is nobody's op: no menu.
            bob.send(json.dumps({"type": "join", "room": "#lobby"}))
            bob.recv_until(type="history_end", room="#lobby")
        p.locator("#room-list li", has_text="#lobby").click()
        expect(p.locator("#room-title")).to_have_text("#lobby")
        expect(p.locator("#user-list details.mod")).to_have_count(0)
    page.assert_clean()
