"""Rooms and direct messages over gRPC (issue 16 in the Protobuf contract): a gRPC
client enters rooms, parts, lists them, sets topics and sends direct messages, with
TCP clients in the same rooms; ``Who``, ``History`` and ``Post`` take a room; an empty
``room`` is ``#lobby``, as a JSON message without ``room`` is."""

from __future__ import annotations

from dataclasses import replace

import grpc
import pytest

from tests.support.config import TEST_CONFIG
from tests.support.grpcclient import Failed, JsonSession, grpc_client
from tests.support.tcp import TcpClient
from trio_chat import Bound, Config
from trio_chat.v1 import chat_pb2 as pb


@pytest.fixture
def config() -> Config:
    return replace(TEST_CONFIG, grpc_port=0, room_create_rate=0)


def target(server: Bound) -> str:
    assert server.grpc_target is not None
    return server.grpc_target


async def test_a_session_enters_rooms_chats_parts_and_lists_them(server: Bound) -> None:
    async with grpc_client(target(server)) as client, \
            await TcpClient.connect(server.tcp_port) as bob:
        await bob.join("Bob")
        await bob.send({"type": "join", "room": "#dev"})
        await bob.recv_until(type="history_end", room="#dev")
        ann = await JsonSession.open(client)
        await ann.join("Ann")
        await ann.send({"type": "join", "room": "#DEV"})
        welcome = await ann.recv_until(type="welcome")
        assert (welcome["room"], welcome["users"], welcome["clients_count"]) == (
            "#dev", ["Bob", "Ann"], 2)
        end = await ann.recv_until(type="history_end")
        assert end["room"] == "#dev"
        notice = await bob.recv_until(type="system", event="join", room="#dev", name="Ann")
        assert notice["text"] == "Ann joined #dev"

        # A chat names its room; one without it is #lobby's.
        await ann.send({"type": "chat", "room": "#dev", "text": "in dev"})
        heard = await bob.recv_until(type="chat", text="in dev")
        assert heard["room"] == "#dev" and heard["user"] == "Ann"
        echo = await ann.recv_until(type="chat", text="in dev")
        assert (echo["room"], echo["id"]) == ("#dev", heard["id"])
        await ann.send({"type": "chat", "text": "in lobby"})
        assert (await bob.recv_until(type="chat", text="in lobby"))["room"] == "#lobby"

        # who of a room; the list of rooms (a nested message each).
        await ann.send({"type": "who", "room": "#dev"})
        users = await ann.recv_until(type="users")
        assert (users["room"], users["users"], users["clients_count"]) == (
            "#dev", ["Bob", "Ann"], 2)
        await ann.send({"type": "rooms"})
        listing = await ann.recv_until(type="rooms")
        assert listing["total"] == 2
        assert {(one["room"], one["users"]) for one in listing["rooms"]} == {
            ("#lobby", 2), ("#dev", 2)}

        # A topic: the notice carries it, the list and the next welcome too.
        await ann.send({"type": "topic", "room": "#dev", "topic": "release on Friday"})
        topic = await bob.recv_until(type="system", event="topic")
        assert (topic["room"], topic["name"], topic["topic"]) == (
            "#dev", "Ann", "release on Friday")
        await ann.recv_until(type="system", event="topic")
        await bob.send({"type": "join", "room": "#dev"})  # a resync: the welcome again
        assert (await bob.recv_until(type="welcome"))["topic"] == "release on Friday"

        # part: the one who parted gets the leave notice; chat there is refused.
        await ann.send({"type": "part", "room": "#dev"})
        left = await ann.recv_until(type="system", event="leave")
        assert (left["room"], left["name"]) == ("#dev", "Ann")
        assert (await bob.recv_until(type="system", event="leave", room="#dev"))["name"] == "Ann"
        await ann.send({"type": "chat", "room": "#dev", "text": "still?"})
        assert (await ann.recv_until(type="error"))["code"] == "not_in_room"


async def test_direct_messages_between_grpc_and_tcp(server: Bound) -> None:
    async with grpc_client(target(server)) as client, \
            await TcpClient.connect(server.tcp_port) as bob:
        await bob.join("Bob")
        ann = await JsonSession.open(client)
        await ann.join("Ann")
        await ann.send({"type": "msg", "to": "bob", "text": "psst"})
        got = await bob.recv_until(type="msg")
        assert (got["from"], got["to"], got["text"]) == ("Ann", "Bob", "psst")
        echo = await ann.recv_until(type="msg")
        echo.pop("history", None)  # Protobuf's bool is always there (false: live)
        assert echo == got  # the same message, id included
        await bob.send({"type": "msg", "to": "Ann", "text": "back"})
        back = await ann.recv_until(type="msg", text="back")
        assert (back["from"], back["to"]) == ("Bob", "Ann") and back["id"] > got["id"]
        await ann.send({"type": "msg", "to": "Nobody", "text": "hello?"})
        assert (await ann.recv_until(type="error"))["code"] == "no_such_user"


async def test_an_empty_room_is_the_lobby_and_a_bad_one_is_refused(server: Bound) -> None:
    """Proto3 cannot send an absent string: an empty ``room`` means ``#lobby`` (a
    join naming no room); a bad name gets the JSON protocol's ``room_invalid``."""
    async with grpc_client(target(server)) as client:
        ann = await client.session()
        await ann.join("Ann", room="")
        assert (await ann.receive_until("history_end")).history_end.room == "#lobby"
        await ann.send(pb.ClientEvent(chat=pb.ChatRequest(text="hi", room="")))
        assert (await ann.receive_until("chat")).chat.room == "#lobby"
        await ann.send(pb.ClientEvent(join=pb.JoinRequest(room="#ops")))  # no user: named
        welcome = await ann.receive_until("welcome")
        assert (welcome.welcome.room, welcome.welcome.user) == ("#ops", "Ann")
        await ann.send(pb.ClientEvent(topic=pb.TopicRequest(room="#ops", topic="x")))
        assert (await ann.receive_until("system", event="topic")).system.topic == "x"
        await ann.send(pb.ClientEvent(part=pb.PartRequest(room="no hash")))
        error = await ann.receive_until("error")
        assert error.error.code == "room_invalid"
        await ann.send(pb.ClientEvent(part=pb.PartRequest()))  # #lobby
        left = await ann.receive_until("system", event="leave")
        assert left.system.room == "#lobby"
        with pytest.raises(Failed) as failed:
            await client.who(room="lobby")
        assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert failed.value.details.startswith("room_invalid: ")
        with pytest.raises(Failed) as failed:
            await client.history(room="#" + "x" * 33)
        assert failed.value.details.startswith("room_invalid: ")


async def test_who_history_and_post_take_a_room(server: Bound) -> None:
    async with grpc_client(target(server)) as client, \
            await TcpClient.connect(server.tcp_port) as bob:
        await bob.join("Bob")
        await bob.send({"type": "join", "room": "#dev"})
        await bob.recv_until(type="history_end", room="#dev")
        assert await client.who(room="#dev") == pb.WhoReply(
            users=["Bob"], clients_count=1, room="#dev")
        assert await client.who(room="#nowhere") == pb.WhoReply(room="#nowhere")

        summary = await client.post(
            pb.PostRequest(user="Bot", text="one", room="#Dev"),
            pb.PostRequest(text="two"), pb.PostRequest(text="three", room="#dev"),
        )
        assert len(summary.ids) == 3
        # Bob, in #dev, saw the bot come into #dev, say it, and go.
        joined = await bob.recv_until(type="system", event="join", name="Bot")
        assert joined["room"] == "#dev"
        for message_id, text in zip(summary.ids, ["one", "two", "three"], strict=True):
            message = await bob.recv_until(type="chat", user="Bot")
            assert (message["id"], message["text"], message["room"]) == (message_id, text, "#dev")
        assert (await bob.recv_until(type="system", event="leave", name="Bot"))["room"] == "#dev"
        await bob.send({"type": "chat", "text": "lobby only"})
        await bob.recv_until(type="chat", text="lobby only")

        dev = await client.history(room="#dev")
        assert [m.text for m in dev] == ["one", "two", "three"]
        assert all(m.room == "#dev" and m.history for m in dev)
        assert [m.text for m in await client.history()] == ["lobby only"]  # #lobby's
        assert [m.text for m in await client.history(room="#dev", since=summary.ids[0],
                                                     limit=1)] == ["two"]
        assert await client.history(room="#nowhere") == []

        # One call posts into one room.
        with pytest.raises(Failed) as failed:
            await client.post(pb.PostRequest(user="Bot", text="a", room="#dev"),
                              pb.PostRequest(text="b", room="#ops"))
        assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert failed.value.details.startswith("room_invalid: ")
        assert "1 posted before it" in failed.value.details
