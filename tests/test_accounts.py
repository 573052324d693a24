"""Accounts over a real server (issue 17): register, login (password or token),
logout, password changes, registered names refused to guests, several connections of
one account, registration modes, TLS, throttling, and no secret in any log line or
message. Each over TCP and WebSocket where the transport could matter; the server
keeps its accounts in a real SQLite file."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.clients import Client, chat_client
from tests.support.config import TEST_CONFIG
from tests.support.tcp import Message, TcpClient
from tests.support.tls import TlsFiles
from trio_chat import Bound, Config, serve
from trio_chat.accounts.store import AccountsDB

PASSWORD = "correct horse battery"
TRANSPORTS = ["tcp", "ws"]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "chat.db")


@pytest.fixture
def config(db: str) -> Config:
    return replace(TEST_CONFIG, db=db)


async def register(client: Client, name: str, password: str = PASSWORD,
                   **extra: Any) -> tuple[Message, Message]:
    """Register ``name``: its welcome and its token."""
    await client.send({"type": "register", "user": name, "password": password, **extra})
    welcome = await client.recv_until(type="welcome")
    token = await client.recv_until(type="token")
    return welcome, token


async def login(client: Client, name: str, password: str = PASSWORD) -> tuple[Message, Message]:
    await client.send({"type": "login", "user": name, "password": password})
    welcome = await client.recv_until(type="welcome")
    token = await client.recv_until(type="token")
    return welcome, token


async def error(client: Client) -> Message:
    return await client.recv_until(type="error")


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_register_answers_welcome_with_account_then_token(
    server: Bound, kind: str
) -> None:
    async with chat_client(server, kind) as ann, chat_client(server, kind) as bob:
        await bob.send({"type": "join", "user": "Bob"})
        guest = await bob.recv_until(type="welcome")
        assert "account" not in guest  # a guest's welcome is v1's
        await ann.send({"type": "register", "user": "Ann", "password": PASSWORD})
        notice = await ann.recv()
        assert notice["type"] == "system" and notice["event"] == "insecure"
        welcome = await ann.recv_until(type="welcome")
        assert welcome["user"] == "Ann" and welcome["account"] == "Ann"
        assert set(welcome["users"]) == {"Ann", "Bob"}
        token = await ann.recv_until(type="token")
        assert isinstance(token["token"], str) and isinstance(token["expires"], int)
        await bob.recv_until(type="system", event="join", name="Ann")
        # The cleartext notice is said once per connection.
        await ann.send({"type": "login", "user": "Ann", "password": PASSWORD})
        again = await ann.recv_until(type="token")
        assert again["token"]
        await ann.send({"type": "ping"})
        assert (await ann.recv_until(type="pong"))


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_login_with_password_and_with_token(server: Bound, kind: str) -> None:
    async with chat_client(server, kind) as first:
        _, token = await register(first, "Ann")
    async with chat_client(server, kind) as second:
        welcome, _ = await login(second, "ann")  # the name's key: any case
        assert welcome["user"] == welcome["account"] == "Ann"
    async with chat_client(server, kind) as third:
        await third.send({"type": "login", "token": token["token"]})
        welcome = await third.recv_until(type="welcome")
        assert welcome["account"] == "Ann"
        assert (await third.recv_until(type="token"))["token"]


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_login_failed_is_the_same_for_unknown_names_and_wrong_passwords(
    server: Bound, kind: str
) -> None:
    async with chat_client(server, "tcp") as ann:
        await register(ann, "Ann")
    async with chat_client(server, kind) as client:
        await client.send({"type": "login", "user": "Ann", "password": "wrong password"})
        wrong = await error(client)
        await client.send({"type": "login", "user": "Nobody", "password": "wrong password"})
        unknown = await error(client)
        await client.send({"type": "login", "token": "forged.token"})
        forged = await error(client)
        assert wrong["code"] == unknown["code"] == forged["code"] == "login_failed"
        assert wrong["text"] == unknown["text"]
        await client.send({"type": "who"})
        assert (await client.recv_until(type="users"))["users"] == ["Ann"]


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_registered_names_and_look_alikes_are_refused_to_guests(
    server: Bound, kind: str
) -> None:
    async with chat_client(server, kind) as ann:
        await register(ann, "Ann")
        await ann.send({"type": "logout"})
        await ann.recv_until(type="system", event="logout")
    async with chat_client(server, kind) as guest:
        for name in ("Ann", "ANN", "\u0410nn"):  # the last with a Cyrillic A
            await guest.send({"type": "join", "user": name})
            refused = await error(guest)
            assert refused["code"] == "name_registered", name
        # A new account that looks like an existing one is refused the same way.
        await guest.send({"type": "register", "user": "\u0410nn", "password": PASSWORD})
        assert (await error(guest))["code"] == "name_registered"
        await guest.send({"type": "join", "user": "Bob"})
        assert (await guest.recv_until(type="welcome"))["user"] == "Bob"


async def test_a_seed_style_join_of_a_registered_name_gets_a_free_variant(
    server: Bound,
) -> None:
    async with chat_client(server, "tcp") as ann:
        await register(ann, "Ann")
        await ann.send({"type": "logout"})
        await ann.recv_until(type="system", event="logout")
    async with chat_client(server, "tcp") as seed:
        await seed.send({"type": "chat", "user": "Ann", "text": "hello"})
        variant = await seed.recv_until(type="system", event="variant")
        assert variant["name"] == "Ann2"
        assert (await seed.recv_until(type="chat"))["user"] == "Ann2"


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_one_account_on_two_connections_shares_its_name(
    server: Bound, kind: str
) -> None:
    async with chat_client(server, kind) as phone, chat_client(server, kind) as laptop, \
            chat_client(server, kind) as bob:
        await register(phone, "Ann")
        await bob.send({"type": "join", "user": "Bob"})
        await bob.recv_until(type="welcome")
        welcome, _ = await login(laptop, "Ann")
        assert welcome["users"].count("Ann") == 1
        await bob.send({"type": "who"})
        while (users := await bob.recv())["type"] != "users":
            assert users.get("name") != "Ann", users  # no notice of a second Ann
        assert sorted(users["users"]) == ["Ann", "Bob"] and users["clients_count"] == 2
        await bob.send({"type": "chat", "text": "to both"})
        for device in (phone, laptop):
            assert (await device.recv_until(type="chat"))["text"] == "to both"
        await laptop.send({"type": "chat", "text": "from the laptop"})
        said = await bob.recv_until(type="chat", text="from the laptop")
        assert said["user"] == "Ann"
        assert (await phone.recv_until(type="chat", text="from the laptop"))["user"] == "Ann"


async def test_closing_one_of_two_connections_is_silent(server: Bound) -> None:
    async with chat_client(server, "tcp") as phone, chat_client(server, "tcp") as bob:
        await register(phone, "Ann")
        await bob.send({"type": "join", "user": "Bob"})
        await bob.recv_until(type="welcome")
        async with chat_client(server, "tcp") as laptop:
            await login(laptop, "Ann")
        await phone.send({"type": "chat", "text": "still here"})
        message = await bob.recv()
        while message["type"] != "chat":
            assert message.get("event") != "leave", message
            message = await bob.recv()
        assert message["user"] == "Ann"


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_a_guest_that_logs_in_is_renamed(server: Bound, kind: str) -> None:
    async with chat_client(server, kind) as first:
        await register(first, "Ann")
        await first.send({"type": "logout"})
        await first.recv_until(type="system", event="logout")
    async with chat_client(server, kind) as ann, chat_client(server, kind) as bob:
        await bob.send({"type": "join", "user": "Bob"})
        await bob.recv_until(type="welcome")
        await ann.send({"type": "join", "user": "Guest7"})
        await ann.recv_until(type="welcome")
        welcome, _ = await login(ann, "Ann")
        assert welcome["user"] == "Ann" and welcome["account"] == "Ann"
        rename = await bob.recv_until(type="system", event="rename")
        assert rename["old"] == "Guest7" and rename["name"] == "Ann"
        # Logged in, the name is the account's.
        await ann.send({"type": "join", "user": "Someone"})
        assert (await error(ann))["code"] == "name_invalid"


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_logout_and_password_change_revoke_tokens(server: Bound, kind: str) -> None:
    async with chat_client(server, kind) as ann, chat_client(server, kind) as bob:
        await bob.send({"type": "join", "user": "Bob"})
        await bob.recv_until(type="welcome")
        _, token = await register(ann, "Ann")
        await ann.send({"type": "logout"})
        out = await ann.recv_until(type="system", event="logout")
        assert out["name"] == "Ann"
        await bob.recv_until(type="system", event="leave", name="Ann")
        await ann.send({"type": "login", "token": token["token"]})
        assert (await error(ann))["code"] == "login_failed"
        await ann.send({"type": "logout"})
        assert (await error(ann))["code"] == "not_logged_in"
        await ann.send({"type": "password", "old": PASSWORD, "new": "another password"})
        assert (await error(ann))["code"] == "not_logged_in"
        _, token = await login(ann, "Ann")
        await ann.send({"type": "password", "old": "not it at all", "new": "another password"})
        assert (await error(ann))["code"] == "login_failed"
        await ann.send({"type": "password", "old": PASSWORD, "new": "short"})
        assert (await error(ann))["code"] == "password_invalid"
        await ann.send({"type": "password", "old": PASSWORD, "new": "another password"})
        await ann.recv_until(type="system", event="password")
        fresh = await ann.recv_until(type="token")
    async with chat_client(server, kind) as again:
        await again.send({"type": "login", "token": token["token"]})
        assert (await error(again))["code"] == "login_failed"
        await again.send({"type": "login", "user": "Ann", "password": PASSWORD})
        assert (await error(again))["code"] == "login_failed"
        await again.send({"type": "login", "token": fresh["token"]})
        assert (await again.recv_until(type="welcome"))["account"] == "Ann"


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_password_length_is_checked(server: Bound, kind: str) -> None:
    async with chat_client(server, kind) as client:
        for password in ("short", "x" * 257):
            await client.send({"type": "register", "user": "Ann", "password": password})
            assert (await error(client))["code"] == "password_invalid"
        await client.send({"type": "register", "user": "Ann"})
        assert (await error(client))["code"] == "missing_field"
        welcome, _ = await register(client, "Ann", "x" * 256)
        assert welcome["account"] == "Ann"


async def test_registration_closed(db: str) -> None:
    config = replace(TEST_CONFIG, db=db, registration="closed")
    async with trio.open_nursery() as nursery:
        server: Bound = await nursery.start(serve, config)
        for kind in TRANSPORTS:
            async with chat_client(server, kind) as client:
                await client.send({"type": "register", "user": "Ann", "password": PASSWORD})
                assert (await error(client))["code"] == "registration_closed"
        nursery.cancel_scope.cancel()


async def test_registration_by_invite(db: str) -> None:
    config = replace(TEST_CONFIG, db=db, registration="invite")
    async with trio.open_nursery() as nursery:
        server: Bound = await nursery.start(serve, config)
        accounts = AccountsDB(db)  # as `trio-chat admin invite` does, beside the server
        code, _ = accounts.create_invite()
        accounts.close()
        async with chat_client(server, "ws") as client:
            await client.send({"type": "register", "user": "Ann", "password": PASSWORD})
            assert (await error(client))["code"] == "invite_invalid"
            await client.send({"type": "register", "user": "Ann", "password": PASSWORD,
                               "invite": "not-a-code"})
            assert (await error(client))["code"] == "invite_invalid"
            welcome, _ = await register(client, "Ann", invite=code)
            assert welcome["account"] == "Ann"
        async with chat_client(server, "tcp") as other:
            await other.send({"type": "register", "user": "Bob", "password": PASSWORD,
                              "invite": code})
            assert (await error(other))["code"] == "invite_invalid"  # used
        nursery.cancel_scope.cancel()


async def test_require_tls_for_login_refuses_credentials_in_clear(db: str) -> None:
    config = replace(TEST_CONFIG, db=db, require_tls_for_login=True)
    async with trio.open_nursery() as nursery:
        server: Bound = await nursery.start(serve, config)
        for kind in TRANSPORTS:
            async with chat_client(server, kind) as client:
                await client.send({"type": "register", "user": "Ann", "password": PASSWORD})
                assert (await error(client))["code"] == "tls_required"
                await client.send({"type": "login", "token": "x.y"})
                assert (await error(client))["code"] == "tls_required"
                await client.send({"type": "join", "user": f"Guest {kind}"})  # guests may
                assert (await client.recv_until(type="welcome"))["user"] == f"Guest {kind}"
        nursery.cancel_scope.cancel()


async def test_over_tls_there_is_no_cleartext_notice(db: str, tls: TlsFiles) -> None:
    config = tls.server_config(replace(TEST_CONFIG, db=db, require_tls_for_login=True))
    async with trio.open_nursery() as nursery:
        server: Bound = await nursery.start(serve, config)
        async with await tls.tcp_client(server.tcp_port) as client:
            await client.send({"type": "register", "user": "Ann", "password": PASSWORD})
            first = await client.recv()
            assert first["type"] == "welcome" and first["account"] == "Ann"
        nursery.cancel_scope.cancel()


async def test_failed_logins_are_throttled_per_account(server: Bound) -> None:
    async with chat_client(server, "tcp") as ann:
        await register(ann, "Ann")
    async with chat_client(server, "tcp") as guesser:
        for _ in range(3):
            await guesser.send({"type": "login", "user": "Ann", "password": "guess guess"})
            assert (await error(guesser))["code"] == "login_failed"
        await guesser.send({"type": "login", "user": "Ann", "password": PASSWORD})
        throttled = await error(guesser)
        assert throttled["code"] == "rate_limited" and "try again" in throttled["text"]
        # The connection stays, and another account is not throttled.
        await guesser.send({"type": "login", "user": "Bob", "password": "guess guess"})
        assert (await error(guesser))["code"] == "login_failed"


async def test_plain_text_commands(server: Bound) -> None:
    async with await TcpClient.connect(server.tcp_port) as nc:
        await nc.send_raw(b"/register Ann Lee hunter2hunter2\n")
        welcome = await nc.recv_until(type="welcome")
        assert welcome["account"] == "Ann Lee" and "resume" not in welcome
        await nc.recv_until(type="token")
        await nc.send_raw(b"/password hunter2hunter2 new-password\n")
        await nc.recv_until(type="system", event="password")
        await nc.send_raw(b"/logout\n")
        await nc.recv_until(type="system", event="logout")
        await nc.send_raw(b"/login Ann Lee new-password\n")
        assert (await nc.recv_until(type="welcome"))["account"] == "Ann Lee"
        await nc.send_raw(b"/login Ann\n")
        assert (await error(nc))["code"] == "missing_field"
        await nc.send_raw(b"/help\n")
        help_text = (await nc.recv_until(type="help"))["text"]
        for command in ("/register", "/login", "/logout", "/password"):
            assert command in help_text


async def test_accounts_outlive_the_server(db: str) -> None:
    config = replace(TEST_CONFIG, db=db)
    async with trio.open_nursery() as nursery:
        server: Bound = await nursery.start(serve, config)
        async with chat_client(server, "tcp") as client:
            _, token = await register(client, "Ann")
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve, config)
        async with chat_client(server, "ws") as client:
            await client.send({"type": "login", "token": token["token"]})
            assert (await client.recv_until(type="welcome"))["account"] == "Ann"
        async with chat_client(server, "tcp") as guest:
            await guest.send({"type": "join", "user": "Ann"})
            assert (await error(guest))["code"] == "name_registered"
        nursery.cancel_scope.cancel()


async def test_no_password_hash_or_token_in_logs_or_messages(
    server: Bound, caplog: pytest.LogCaptureFixture, db: str
) -> None:
    secrets = ["first-secret-pw", "second-secret-pw", "wrong-secret-pw"]
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)
    async with chat_client(server, "tcp") as observer, chat_client(server, "ws") as ann:
        await observer.send({"type": "join", "user": "Bob"})
        await observer.recv_until(type="welcome")
        _, token = await register(ann, "Ann", secrets[0])
        await ann.send({"type": "password", "old": secrets[0], "new": secrets[1]})
        await ann.recv_until(type="token")
        await ann.send({"type": "login", "user": "Ann", "password": secrets[2]})
        await error(ann)
        await ann.send({"type": "register", "user": "Ann", "password": secrets[2]})
        await error(ann)
        await ann.send({"type": "chat", "text": "done"})
        while (message := await observer.recv())["type"] != "chat":
            seen.append(json.dumps(message))
        seen.append(json.dumps(message))
    hashes = [account.hash for account in [AccountsDB(db).get("Ann")] if account]
    assert hashes and hashes[0].startswith("$argon2id$")
    forbidden = [*secrets, token["token"], *hashes, "$argon2"]
    logged = [f"{record.getMessage()} {record.__dict__}" for record in caplog.records]
    for line in logged + seen:
        for secret in forbidden:
            assert secret not in line, line


async def test_a_resumed_seat_stays_logged_in(server: Bound) -> None:
    async with chat_client(server, "ws") as first:
        welcome, _ = await register(first, "Ann")
        resume = welcome["resume"]
    # The connection was lost (closed without leave): its seat is held for the grace.
    async with chat_client(server, "ws") as again:
        await again.send({"type": "join", "user": "Ann", "resume": resume})
        back = await again.recv_until(type="welcome")
        assert back["user"] == back["account"] == "Ann"
        await again.send({"type": "logout"})  # logged in: it can log out
        await again.recv_until(type="system", event="logout")


async def test_a_grpc_post_under_a_registered_name_is_refused(db: str) -> None:
    from tests.support.grpcclient import Failed, grpc_client  # grpcio: this test only
    from trio_chat.v1 import chat_pb2 as pb

    config = replace(TEST_CONFIG, db=db, grpc_port=0)
    async with trio.open_nursery() as nursery:
        server: Bound = await nursery.start(serve, config)
        async with chat_client(server, "tcp") as ann:
            await register(ann, "Ann")
            assert server.grpc_target is not None
            async with grpc_client(server.grpc_target) as client:
                with pytest.raises(Failed) as failed:
                    await client.post(pb.PostRequest(user="ann", text="hello"))
                assert failed.value.code.name == "ALREADY_EXISTS"
                assert failed.value.details.startswith("name_registered: ")
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_dms_between_accounts_are_replayed_at_login(server: Bound, kind: str) -> None:
    async with chat_client(server, kind) as ann, chat_client(server, kind) as bob, \
            chat_client(server, kind) as cid:
        await register(ann, "Ann")
        await register(bob, "Bob")
        await cid.send({"type": "join", "user": "Cid"})  # a guest
        await cid.recv_until(type="welcome")
        await ann.send({"type": "msg", "to": "Bob", "text": "first"})
        first = await bob.recv_until(type="msg")
        await ann.send({"type": "msg", "to": "Cid", "text": "to a guest"})
        await cid.recv_until(type="msg")
        await bob.send({"type": "msg", "to": "Ann", "text": "second"})
        second = await ann.recv_until(type="msg", text="second")
        assert first["id"] < second["id"]
    async with chat_client(server, kind) as bob:
        await bob.send({"type": "login", "user": "Bob", "password": PASSWORD})
        replayed = []
        while (message := await bob.recv())["type"] != "token":
            if message["type"] == "msg":
                replayed.append(message)
        assert [(m["from"], m["to"], m["text"], m["history"]) for m in replayed] == [
            ("Ann", "Bob", "first", True), ("Bob", "Ann", "second", True),
        ]
        assert [m["id"] for m in replayed] == [first["id"], second["id"]]
    async with chat_client(server, kind) as ann:
        # since: only what came after; the DM with the guest was never kept.
        await ann.send({"type": "login", "user": "Ann", "password": PASSWORD,
                        "since": first["id"]})
        texts: list[str] = []
        while (message := await ann.recv())["type"] != "token":
            if message["type"] == "msg":
                texts.append(message["text"])
        assert texts == ["second"]


async def test_every_connection_of_an_account_gets_its_dms_and_rooms(server: Bound) -> None:
    async with chat_client(server, "tcp") as phone, chat_client(server, "ws") as laptop, \
            chat_client(server, "tcp") as bob:
        await register(phone, "Ann")
        await login(laptop, "Ann")
        await bob.send({"type": "join", "user": "Bob"})
        await bob.recv_until(type="welcome")
        await bob.send({"type": "msg", "to": "Ann", "text": "psst"})
        for device in (phone, laptop):
            assert (await device.recv_until(type="msg"))["text"] == "psst"
        # One connection enters a room: the account is in it, on both.
        await laptop.send({"type": "join", "room": "#dev"})
        for device in (phone, laptop):
            assert (await device.recv_until(type="welcome", room="#dev"))["account"] == "Ann"
        await bob.send({"type": "join", "room": "#dev"})
        await bob.recv_until(type="welcome", room="#dev")
        await bob.send({"type": "chat", "room": "#dev", "text": "in dev"})
        for device in (phone, laptop):
            assert (await device.recv_until(type="chat", room="#dev"))["text"] == "in dev"
        await phone.send({"type": "chat", "room": "#dev", "text": "from the phone"})
        said = await bob.recv_until(type="chat", text="from the phone")
        assert said["user"] == "Ann"
        # The laptop replies to the DM: Bob gets it from Ann, and both of Ann's see it.
        await laptop.send({"type": "msg", "to": "Bob", "text": "hi back"})
        assert (await bob.recv_until(type="msg", text="hi back"))["from"] == "Ann"
        assert (await phone.recv_until(type="msg", text="hi back"))["to"] == "Bob"


async def test_register_and_login_take_a_room(server: Bound) -> None:
    async with chat_client(server, "ws") as ann:
        await ann.send({"type": "register", "user": "Ann", "password": PASSWORD,
                        "room": "#dev"})
        welcome = await ann.recv_until(type="welcome")
        assert welcome["room"] == "#dev" and welcome["account"] == "Ann"
        await ann.send({"type": "register", "user": "Bob", "password": PASSWORD,
                        "room": "no room"})
        assert (await error(ann))["code"] == "room_invalid"


async def test_a_login_beside_a_held_seat_gets_the_traffic_and_the_seat_comes_back(
    server: Bound,
) -> None:
    async with chat_client(server, "tcp") as bob:
        await bob.send({"type": "join", "user": "Bob"})
        await bob.recv_until(type="welcome")
        async with chat_client(server, "ws") as first:
            welcome, token = await register(first, "Ann")
        # Lost without a leave: Ann's seat is held for the grace. A login now shares it.
        async with chat_client(server, "ws") as phone:
            await phone.send({"type": "login", "token": token["token"]})
            await phone.recv_until(type="token")
            await bob.send({"type": "chat", "text": "while held"})
            assert (await phone.recv_until(type="chat"))["text"] == "while held"
            async with chat_client(server, "ws") as back:
                await back.send({"type": "join", "user": "Ann", "resume": welcome["resume"]})
                assert (await back.recv_until(type="welcome"))["account"] == "Ann"
                await bob.send({"type": "chat", "text": "both"})
                for device in (phone, back):
                    assert (await device.recv_until(type="chat", text="both"))["user"] == "Bob"
            await bob.send({"type": "chat", "text": "phone only"})
            assert (await phone.recv_until(type="chat", text="phone only"))
            await bob.send({"type": "who"})
            users = await bob.recv_until(type="users")
            assert sorted(users["users"]) == ["Ann", "Bob"]
