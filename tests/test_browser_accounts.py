"""The page's accounts in a real headless Chromium against a real server with a real
SQLite file (the server in a thread: tests/support/browser.py): registering, a reload
logged in by the kept token, logging out, a wrong password's error, a guest refused a
registered name (and offered to log in), a refused token dropped for the guest form,
an invite asked for, and the dialog at 320px."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import WAIT_S, Watched, in_thread, join_as
from tests.support.tcp import BlockingTcpClient
from trio_chat import Bound, Config, serve
from trio_chat.accounts.store import AccountsDB

pytestmark = pytest.mark.slow

PASSWORD = "correct horse"
TOKEN_KEY = "trio-chat.token"


@contextmanager
def account_server(
    tmp_path: Path, registration: str = "open", require_tls_for_login: bool = False
) -> Iterator[Bound]:
    config = Config(tcp_port=0, ws_port=0, db=str(tmp_path / "chat.db"),
                    registration=registration, require_tls_for_login=require_tls_for_login)
    with in_thread(partial(serve, config)) as bound:
        yield bound


def register_over_tcp(bound: Bound, name: str) -> None:
    with BlockingTcpClient(bound.tcp_port, WAIT_S) as client:
        client.send(json.dumps({"type": "register", "user": name, "password": PASSWORD}))
        client.recv_until(type="token")
        client.send('{"type":"leave"}')  # no seat held for a resume: Ann is gone
        while client.sock.recv(65536):  # until the server closes, after the leave
            pass


def log_in(p: Page, mode: str, name: str, password: str) -> None:
    """Fill the dialog's log in (or register) form and send it."""
    expect(p.locator("#join")).to_be_visible()
    p.click(f"#modes button[data-mode={mode}]")
    p.fill("#name", name)
    p.fill("#password", password)
    p.press("#password", "Enter")


def kept_token(p: Page) -> str | None:
    token = p.evaluate(f"localStorage.getItem({TOKEN_KEY!r})")
    assert token is None or isinstance(token, str)
    return token


def test_register_reload_logged_in_by_the_token_then_log_out(
    page: Watched, tmp_path: Path
) -> None:
    p = page.page
    with account_server(tmp_path) as bound:
        p.goto(bound.page_url)
        expect(p.locator("#password")).to_be_hidden()  # a guest needs no password
        log_in(p, "register", "Ann", PASSWORD)
        expect(p.locator("#join")).to_be_hidden()
        expect(p.locator("#me")).to_have_text("Ann")
        expect(p.locator("#me")).to_have_attribute("data-account", "Ann")
        expect(p.locator("#state")).to_have_attribute("data-state", "online")
        p.wait_for_function(f"localStorage.getItem({TOKEN_KEY!r}) !== null")
        assert p.locator("#password").input_value() == ""  # the password is not kept

        with BlockingTcpClient(bound.tcp_port, WAIT_S) as bob:
            bob.send('{"type":"join","user":"Bob"}')
            bob.recv_until(type="history_end")
            # A reload takes the seat back (its resume token), still logged in.
            p.reload()
            expect(p.locator("#me")).to_have_attribute("data-account", "Ann")
            expect(p.locator("#join")).to_be_hidden()
            # A new tab has no seat to resume: the kept token logs it in.
            tab = p.context.new_page()
            tab.goto(bound.page_url)
            expect(tab.locator("#me")).to_have_attribute("data-account", "Ann")
            expect(tab.locator("#join")).to_be_hidden()
            tab.fill("#text", "from the second tab")
            tab.press("#text", "Enter")
            said = bob.recv_until(type="chat", text="from the second tab")
            assert said["user"] == "Ann"
            tab.close()

            # Log out: from the account's menu (the header's name).
            p.click("#me")
            expect(p.locator("#account-info")).to_have_text("Logged in as Ann.")
            p.click("#logout")
            expect(p.locator("#join")).to_be_visible()
            expect(p.locator("#join-error")).to_contain_text("You logged out")
            expect(p.locator("#modes button[data-mode=guest]")).to_have_attribute(
                "aria-pressed", "true"
            )
            expect(p.locator("#me")).to_be_hidden()
            assert kept_token(p) is None
            bob.recv_until(type="system", event="leave", name="Ann")

        # Reloaded, the page is a guest's: the dialog asks.
        p.reload()
        expect(p.locator("#join")).to_be_visible()
        expect(p.locator("#me")).to_be_hidden()
        join_as(p, "Carol")
        expect(p.locator("#me")).not_to_have_attribute("data-account", "Carol")
    page.assert_clean()


def test_a_wrong_password_is_shown_and_the_right_one_logs_in(
    page: Watched, tmp_path: Path
) -> None:
    p = page.page
    with account_server(tmp_path) as bound:
        register_over_tcp(bound, "Ann")
        p.goto(bound.page_url)
        log_in(p, "login", "ann", "not the password")
        expect(p.locator("#join-error")).to_contain_text("wrong name or password")
        expect(p.locator("#join-submit")).to_be_enabled()
        expect(p.locator("#join-submit")).to_have_text("Log in")
        assert kept_token(p) is None
        p.fill("#password", "short")  # checked on the page first
        p.press("#password", "Enter")
        expect(p.locator("#join-error")).to_have_text("A password is 8 to 256 characters.")
        p.fill("#password", PASSWORD)
        p.press("#password", "Enter")
        expect(p.locator("#me")).to_have_attribute("data-account", "Ann")  # as registered
        expect(p.locator("#me")).to_have_text("Ann")
    page.assert_clean()


def test_a_guest_is_refused_a_registered_name_and_offered_to_log_in(
    page: Watched, tmp_path: Path
) -> None:
    p = page.page
    with account_server(tmp_path) as bound:
        register_over_tcp(bound, "Ann")
        p.goto(bound.page_url)
        join_as(p, "ANN", expect_state=None)  # a look-alike of a registered name
        expect(p.locator("#join-error")).to_contain_text("registered")
        expect(p.locator("#offer-login")).to_be_visible()
        expect(p.locator("#password")).to_be_hidden()
        p.click("#offer-login")
        expect(p.locator("#password")).to_be_visible()
        expect(p.locator("#name")).to_have_value("ANN")
        p.fill("#name", "Ann")
        p.fill("#password", PASSWORD)
        p.press("#password", "Enter")
        expect(p.locator("#me")).to_have_attribute("data-account", "Ann")
    page.assert_clean()


def test_a_guest_logs_in_from_the_header_and_a_refused_token_is_dropped(
    page: Watched, tmp_path: Path
) -> None:
    p = page.page
    with account_server(tmp_path) as bound:
        register_over_tcp(bound, "Ann")
        p.goto(bound.page_url)
        join_as(p, "visitor")
        with BlockingTcpClient(bound.tcp_port, WAIT_S) as bob:
            bob.send('{"type":"join","user":"Bob"}')
            bob.recv_until(type="history_end")
            p.click("#me")
            log_in(p, "login", "Ann", PASSWORD)
            expect(p.locator("#join")).to_be_hidden()
            expect(p.locator("#me")).to_have_attribute("data-account", "Ann")
            # The same connection: the others see a rename, not a leave and a join.
            renamed = bob.recv_until(type="system", event="rename")
            assert (renamed["old"], renamed["name"]) == ("visitor", "Ann")
            expect(p.locator("#user-list li")).to_have_text(["Ann", "Bob"])

        # A token the server refuses (forged here): dropped, and the guest form asks.
        p.evaluate(f"localStorage.setItem({TOKEN_KEY!r}, 'not-a-token')")
        p.evaluate("sessionStorage.clear()")
        p.reload()
        expect(p.locator("#join")).to_be_visible()
        expect(p.locator("#join-error")).to_contain_text("log in again")
        assert kept_token(p) is None
        join_as(p, "guest")
    page.assert_clean()


def test_registration_asks_for_an_invite_and_fits_a_phone(
    page: Watched, tmp_path: Path
) -> None:
    p = page.page
    p.set_viewport_size({"width": 320, "height": 560})
    with account_server(tmp_path, registration="invite") as bound:
        p.goto(bound.page_url)
        p.click("#modes button[data-mode=register]")
        expect(p.locator("#invite")).to_be_hidden()  # until the server asks for one
        log_in(p, "register", "Ann", PASSWORD)
        expect(p.locator("#join-error")).to_contain_text("by invitation")
        expect(p.locator("#invite")).to_be_visible()
        width = p.evaluate("document.documentElement.scrollWidth")
        assert width <= 320
        box = p.locator("#join").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 320
        p.fill("#invite", "WRONG")
        p.press("#password", "Enter")
        expect(p.locator("#join-error")).to_contain_text("unknown, used or expired")
        assert kept_token(p) is None
        accounts = AccountsDB(str(tmp_path / "chat.db"))  # as `trio-chat admin invite`
        code, _ = accounts.create_invite()
        accounts.close()
        p.fill("#invite", code)
        p.press("#invite", "Enter")
        expect(p.locator("#me")).to_have_attribute("data-account", "Ann")
        assert p.evaluate("document.documentElement.scrollWidth") <= 320
    page.assert_clean()


def test_a_server_that_wants_tls_for_logins_says_so_and_a_guest_may_still_join(
    page: Watched, tmp_path: Path
) -> None:
    p = page.page
    with account_server(tmp_path, require_tls_for_login=True) as bound:
        p.goto(bound.page_url)
        log_in(p, "login", "Ann", PASSWORD)
        expect(p.locator("#join-error")).to_contain_text("only over TLS")
        # A token kept from elsewhere cannot log in here either: the dialog says why.
        p.evaluate(f"localStorage.setItem({TOKEN_KEY!r}, 'some-token')")
        p.reload()
        expect(p.locator("#join-error")).to_contain_text("only over TLS")
        expect(p.locator("#modes button[data-mode=login]")).to_have_attribute(
            "aria-pressed", "true"
        )
        p.click("#modes button[data-mode=guest]")
        join_as(p, "visitor")  # a guest by choice: the kept token goes
        assert kept_token(p) is None
    page.assert_clean()
