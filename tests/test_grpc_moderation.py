"""Moderation over gRPC (issue 17 in the Protobuf contract): an admin's kick, ban,
bans list and modes sent as ``ModerateRequest``, ``BansRequest`` and ``ModeRequest``;
a server-wide ban ends the banned user's stream ``PERMISSION_DENIED``; a guest's
attempt gets ``not_permitted``. A real server, a real SQLite file, real logins."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from tests.support.config import TEST_CONFIG
from tests.support.grpcclient import JsonSession, grpc_client
from tests.support.tcp import TcpClient
from trio_chat import Bound, Config
from trio_chat.v1 import chat_pb2 as pb

PASSWORD = "correct horse battery"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return replace(TEST_CONFIG, grpc_port=0, db=str(tmp_path / "chat.db"), admins=("Root",))


def target(server: Bound) -> str:
    assert server.grpc_target is not None
    return server.grpc_target


async def test_an_admin_moderates_over_grpc(server: Bound) -> None:
    async with grpc_client(target(server)) as client, \
            await TcpClient.connect(server.tcp_port) as ann:
        root = await client.session()
        await root.send(pb.ClientEvent(register=pb.RegisterRequest(user="Root",
                                                                   password=PASSWORD)))
        await root.receive_until("token")
        await ann.join("Ann")
        bob = await JsonSession.open(client)
        await bob.join("Bob")

        # A guest may not kick.
        await bob.send({"type": "kick", "user": "Ann"})
        assert (await bob.recv_until(type="error"))["code"] == "not_permitted"

        # A kick from #lobby (an empty room): Ann is told who and why, and is out.
        await root.send(pb.ClientEvent(kick=pb.ModerateRequest(user="Ann", reason="calm down")))
        kicked = await ann.recv_until(type="system", event="kick")
        assert (kicked["name"], kicked["by"], kicked["reason"], kicked["room"]) == (
            "Ann", "Root", "calm down", "#lobby")
        notice = await root.receive_until("system", event="kick")
        assert (notice.system.by, notice.system.reason) == ("Root", "calm down")

        # Modes: set one, then ask (neither set).
        await root.send(pb.ClientEvent(mode=pb.ModeRequest(moderated=True)))
        await root.receive_until("system", event="mode")
        await root.send(pb.ClientEvent(mode=pb.ModeRequest()))
        state = (await root.receive_until("mode")).mode
        assert (state.room, state.moderated, state.registered_only) == ("#lobby", True, False)
        await bob.send({"type": "chat", "text": "may I?"})
        muted = await bob.recv_until(type="error")
        assert muted["code"] == "muted"

        # A server-wide ban (an empty room, duration 0: until lifted) ends Bob's stream.
        await root.send(pb.ClientEvent(ban=pb.ModerateRequest(user="Bob", reason="spam")))
        code, details = await bob.ended()
        assert code == grpc.StatusCode.PERMISSION_DENIED and details.startswith("banned: ")
        await root.send(pb.ClientEvent(bans=pb.BansRequest()))
        listing = (await root.receive_until("bans")).bans
        assert listing.room == "" and listing.bans_total == 1
        (ban,) = listing.bans
        assert (ban.user, ban.by, ban.reason, ban.HasField("until")) == (
            "Bob", "Root", "spam", False)

        # Coming back is refused with the ban's reason.
        again = await JsonSession.open(client)
        await again.send({"type": "join", "user": "Bob"})
        refused = await again.recv_until(type="error")
        assert (refused["code"], refused["reason"]) == ("banned", "spam")
        assert "until" not in refused  # until lifted
