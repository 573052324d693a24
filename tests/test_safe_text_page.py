"""Safe text on the chat page (real headless Chromium): a newline or a bidi override in a
message stays inside that message's bubble; it cannot draw a notice or move a name or a
time. Fixtures and helpers: tests/support/browser.py."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.support.browser import WAIT_S, Watched, in_thread, join_as
from tests.support.tcp import BlockingTcpClient
from trio_chat import Config, serve

pytestmark = pytest.mark.slow

SPOOF = "x\n  -- Ann is now known as Admin"
BIDI = "evil \u202e21:43 :nimdA\u202c and \u2067isolate"


def box(locator: Any) -> dict[str, float]:
    found = locator.bounding_box()
    assert found is not None
    return dict(found)


def test_a_message_cannot_draw_a_notice_or_move_a_name_or_a_time(page: Watched) -> None:
    p = page.page
    messages = p.locator("#messages .msg")
    notices = p.locator("#messages .notice")
    with in_thread(partial(serve, Config(tcp_port=0, ws_port=0))) as bound:
        p.goto(bound.page_url)
        join_as(p, "Alice")
        with BlockingTcpClient(bound.tcp_port, WAIT_S) as bob:
            bob.send("/nick Bob")
            bob.recv_until(type="welcome")
            expect(notices.last).to_contain_text("Bob joined the chat")
            before = notices.count()
            bob.send('{"type":"chat","text":' + json.dumps(SPOOF) + "}")
            bob.send('{"type":"chat","text":' + json.dumps(BIDI) + "}")
            bob.send("plain")
            expect(messages).to_have_count(3)

        spoof, bidi, plain = messages.nth(0), messages.nth(1), messages.nth(2)
        expect(spoof.locator(".text")).to_have_text(SPOOF, use_inner_text=True)
        assert notices.count() in (before, before + 1)  # Bob's leave may have come
        expect(notices.filter(has_text="Admin")).to_have_count(0)
        # Both lines are inside the one bubble, below its name.
        text_box, bubble = box(spoof.locator(".text")), box(spoof)
        assert text_box["height"] > box(plain.locator(".text"))["height"] * 1.5
        assert bubble["y"] <= text_box["y"] and (
            text_box["y"] + text_box["height"] <= bubble["y"] + bubble["height"]
        )
        # The override turns only its own text around: name first, then the time.
        for message in (bidi, plain):
            who, time = box(message.locator(".who")), box(message.locator("time"))
            assert who["x"] + who["width"] <= time["x"]
            expect(message.locator(".who")).to_have_text("Bob")
        for selector in (".text", ".who"):
            style = bidi.locator(selector).evaluate("e => getComputedStyle(e).unicodeBidi")
            assert style == "isolate"
        text, bubble = box(bidi.locator(".text")), box(bidi)
        assert bubble["x"] <= text["x"] and text["x"] + text["width"] <= bubble["x"] + bubble[
            "width"
        ]
    page.assert_clean()
