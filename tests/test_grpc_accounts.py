"""Accounts over gRPC (issue 17 in the Protobuf contract): register, the notice for
credentials sent in clear, the token, a login with it on another stream, a stored
direct message replayed at login, logout, and a registered name refused to a guest
and to a ``Post``; the server keeps its accounts in a real SQLite file."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from tests.support.config import TEST_CONFIG
from tests.support.grpcclient import Failed, JsonSession, grpc_client
from tests.support.tcp import TcpClient
from trio_chat import Bound, Config
from trio_chat.v1 import chat_pb2 as pb

PASSWORD = "correct horse battery"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return replace(TEST_CONFIG, grpc_port=0, db=str(tmp_path / "chat.db"))


def target(server: Bound) -> str:
    assert server.grpc_target is not None
    return server.grpc_target


async def test_register_login_with_the_token_and_stored_direct_messages(
    server: Bound, caplog: pytest.LogCaptureFixture
) -> None:
    async with grpc_client(target(server)) as client:
        ann = await client.session()
        await ann.send(pb.ClientEvent(register=pb.RegisterRequest(user="Ann", password=PASSWORD)))
        # Credentials over a stream without TLS: told once, in a notice.
        notice = await ann.receive_until("system", event="insecure")
        assert PASSWORD not in str(notice)
        welcome = await ann.receive_until("welcome")
        assert (welcome.welcome.user, welcome.welcome.account) == ("Ann", "Ann")
        token = (await ann.receive_until("token")).token
        assert token.token and token.expires > 0 and PASSWORD not in token.token

        bob = await JsonSession.open(client)
        await bob.send({"type": "register", "user": "Bob", "password": PASSWORD})
        await bob.recv_until(type="token")
        await bob.send({"type": "msg", "to": "Ann", "text": "kept for you"})
        stored = await bob.recv_until(type="msg")

        # Another stream logs in with the token alone (user and password empty):
        # the same name, and the direct message between the accounts replayed.
        again = await client.session()
        await again.send(pb.ClientEvent(login=pb.LoginRequest(token=token.token, since=0)))
        welcome = await again.receive_until("welcome")
        assert (welcome.welcome.user, welcome.welcome.account) == ("Ann", "Ann")
        replayed = await again.receive_until("msg")
        assert replayed.msg.history and replayed.msg.text == "kept for you"
        assert (replayed.msg.id, getattr(replayed.msg, "from")) == (stored["id"], "Bob")
        await again.receive_until("token")

        # A guest cannot take the registered name, nor post under it.
        async with await TcpClient.connect(server.tcp_port) as guest:
            await guest.send({"type": "join", "user": "bob"})
            assert (await guest.recv_until(type="error"))["code"] == "name_registered"
        with pytest.raises(Failed) as failed:
            await client.post(pb.PostRequest(user="Ann", text="as Ann?"))
        assert failed.value.code == grpc.StatusCode.ALREADY_EXISTS
        assert failed.value.details.startswith("name_registered: ")

        # Logout revokes the tokens: the token no longer logs in.
        await ann.send(pb.ClientEvent(logout=pb.LogoutRequest()))
        await ann.send(pb.ClientEvent(ping=pb.PingRequest()))
        await ann.receive_until("pong")
        late = await client.session()
        await late.send(pb.ClientEvent(login=pb.LoginRequest(token=token.token)))
        assert (await late.receive_until("error")).error.code == "login_failed"
    # The accounts' writes and the history's share the file without a refused write.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_wrong_password_and_a_password_change(server: Bound) -> None:
    async with grpc_client(target(server)) as client:
        ann = await JsonSession.open(client)
        await ann.send({"type": "register", "user": "Ann", "password": PASSWORD})
        await ann.recv_until(type="token")
        await ann.send({"type": "password", "old": PASSWORD, "new": "another good one"})
        await ann.send({"type": "ping"})
        await ann.recv_until(type="pong")
        other = await client.session()
        await other.send(pb.ClientEvent(login=pb.LoginRequest(user="Ann", password=PASSWORD)))
        assert (await other.receive_until("error")).error.code == "login_failed"
        await other.send(pb.ClientEvent(login=pb.LoginRequest(user="Ann",
                                                              password="another good one")))
        assert (await other.receive_until("welcome")).welcome.account == "Ann"
