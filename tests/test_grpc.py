"""gRPC (``--grpc-port``) against a real server, with a real grpcio client: the four
kinds of call, one room with TCP and WebSocket, bad input, the limits."""

from __future__ import annotations

from dataclasses import replace

import grpc
import pytest
import trio

from tests.support.config import TEST_CONFIG
from tests.support.grpcclient import Failed, grpc_client, unpack
from tests.support.tcp import TcpClient
from tests.support.ws import WsClient, ws_client
from trio_chat import Bound, Config
from trio_chat.transports.admission import server_version
from trio_chat.transports.grpc.server import HELLO_TEXT
from trio_chat.v1 import chat_pb2 as pb


@pytest.fixture
def config() -> Config:
    return replace(TEST_CONFIG, grpc_port=0)


def target(server: Bound) -> str:
    assert server.grpc_target is not None
    return server.grpc_target


def kinds(events: list[pb.ServerEvent]) -> list[str]:
    return [str(event.WhichOneof("event")) for event in events]


async def test_a_session_is_a_connection_of_the_room(server: Bound) -> None:
    """join, chat, who, ping, leave in; hello, welcome, the replay's end, the notice,
    the chat, users, pong out, then the stream ends OK, as over TCP."""
    async with grpc_client(target(server)) as client, \
            await TcpClient.connect(server.tcp_port) as bob:
        await bob.join("Bob")
        ann = await client.session()
        hello = await ann.receive()
        assert hello is not None and hello.hello == pb.Hello(
            server="trio-chat", version=server_version(), text=HELLO_TEXT)
        await ann.send(pb.ClientEvent(join=pb.JoinRequest(user="Ann")))
        welcome = await ann.receive_until("welcome")
        token = welcome.welcome.resume
        assert len(token) == 24  # the secret that takes the seat back (test_resume.py)
        assert welcome.welcome == pb.Welcome(
            user="Ann", users=["Bob", "Ann"], clients_count=2, max_text=4096, room="#lobby",
            resume=token,
        )
        end = await ann.receive_until("history_end")
        assert end.history_end.complete and end.history_end.room == "#lobby"
        notice = await bob.recv_until(type="system", event="join", name="Ann")
        assert notice["clients_count"] == 2
        await ann.chat("hi bob")
        message = await bob.recv_until(type="chat", user="Ann")
        echo = await ann.receive_until("chat")
        assert (echo.chat.id, echo.chat.user, echo.chat.text, echo.chat.timestamp) == (
            message["id"], "Ann", "hi bob", message["timestamp"])
        await bob.send({"type": "chat", "text": "hi ann"})
        assert (await ann.receive_until("chat", user="Bob")).chat.text == "hi ann"
        await ann.send(pb.ClientEvent(who=pb.WhoRequest()))
        users = await ann.receive_until("users")
        assert list(users.users.users) == ["Bob", "Ann"]
        await ann.send(pb.ClientEvent(ping=pb.PingRequest()))
        await ann.receive_until("pong")
        await ann.send(pb.ClientEvent(leave=pb.LeaveRequest()))
        assert await ann.drain() == []
        assert await ann.status() == (grpc.StatusCode.OK, "")
        assert (await bob.recv_until(type="system", event="leave"))["name"] == "Ann"


async def test_who_history_and_post(server: Bound) -> None:
    async with grpc_client(target(server)) as client, \
            await TcpClient.connect(server.tcp_port) as bob:
        assert await client.who() == pb.WhoReply(room="#lobby")
        await bob.join("Bob")
        assert await client.who() == pb.WhoReply(users=["Bob"], clients_count=1, room="#lobby")
        summary = await client.post(
            pb.PostRequest(user="Bot", text="one"), pb.PostRequest(text="two"),
            pb.PostRequest(user="Bot", text="three"),
        )
        assert len(summary.ids) == 3 and sorted(summary.ids) == list(summary.ids)
        # Bob saw the poster come, say it, and go.
        assert (await bob.recv_until(type="system", event="join"))["name"] == "Bot"
        for message_id, text in zip(summary.ids, ["one", "two", "three"], strict=True):
            message = await bob.recv_until(type="chat")
            assert (message["id"], message["user"], message["text"]) == (message_id, "Bot", text)
        assert (await bob.recv_until(type="system", event="leave"))["name"] == "Bot"
        await bob.send({"type": "chat", "text": "four"})
        four = (await bob.recv_until(type="chat", text="four"))["id"]

        history = await client.history()
        assert [m.text for m in history] == ["one", "two", "three", "four"]
        assert all(m.history and m.room == "#lobby" for m in history)
        assert [m.id for m in history] == [*summary.ids, four]
        assert [m.text for m in await client.history(limit=2)] == ["three", "four"]
        assert [m.text for m in await client.history(since=summary.ids[0])] == [
            "two", "three", "four"]
        assert [m.text for m in await client.history(since=summary.ids[0], limit=1)] == ["two"]
        assert await client.history(since=four) == []


async def test_grpc_tcp_and_websocket_see_one_order(server: Bound) -> None:
    """Three transports, three senders each sending in turn and at once: every
    receiver sees the same messages in the same order."""
    async with grpc_client(target(server)) as client, \
            await TcpClient.connect(server.tcp_port) as tcp, \
            ws_client(server.ws_port) as conn:
        ws = WsClient(conn)
        g = await client.session()
        await g.join("Gina", batch=True)
        await tcp.join("Tom")
        await ws.join("Wes")
        await g.receive_until("system", name="Wes")

        async def grpc_sender() -> None:
            for n in range(20):
                await g.chat(f"g{n}")

        async def tcp_sender() -> None:
            for n in range(20):
                await tcp.send({"type": "chat", "text": f"t{n}"})

        async def ws_sender() -> None:
            for n in range(20):
                await ws.send({"type": "chat", "text": f"w{n}"})

        async with trio.open_nursery() as nursery:
            for sender in (grpc_sender, tcp_sender, ws_sender):
                nursery.start_soon(sender)
        seen_tcp = [(m["id"], m["text"]) for m in
                    [await tcp.recv_until(type="chat") for _ in range(60)]]
        seen_ws = [(m["id"], m["text"]) for m in
                   [await ws.recv_until(type="chat") for _ in range(60)]]
        seen_grpc = [((e.chat.id, e.chat.text)) for e in
                     [await g.receive_until("chat") for _ in range(60)]]
        assert seen_tcp == seen_ws == seen_grpc
        assert [i for i, _ in seen_tcp] == sorted(i for i, _ in seen_tcp)
        for prefix in "gtw":  # each sender's own order
            assert [t for _, t in seen_tcp if t[0] == prefix] == [f"{prefix}{n}" for n in range(20)]


async def test_resume_with_since(server: Bound) -> None:
    async with grpc_client(target(server)) as client, \
            await TcpClient.connect(server.tcp_port) as bob:
        await bob.join("Bob")
        for text in ("a", "b", "c"):
            await bob.send({"type": "chat", "text": text})
        first = (await bob.recv_until(type="chat", text="a"))["id"]
        last = (await bob.recv_until(type="chat", text="c"))["id"]
        ann = await client.session()
        await ann.join("Ann", since=first)
        replayed = [await ann.receive_until("chat") for _ in range(2)]
        assert [(e.chat.text, e.chat.history) for e in replayed] == [("b", True), ("c", True)]
        end = await ann.receive_until("history_end")
        assert end.history_end.last_id == last and end.history_end.complete


async def test_batch_packs_what_is_queued(server: Bound) -> None:
    """A client that joined with batch gets everything queued at once in one
    ServerEvent: a replay of three messages and its end arrive together."""
    async with grpc_client(target(server)) as client, \
            await TcpClient.connect(server.tcp_port) as bob:
        await bob.join("Bob")
        for text in ("a", "b", "c"):
            await bob.send({"type": "chat", "text": text})
        await bob.recv_until(type="chat", text="c")
        ann = await client.session()
        await ann.send(pb.ClientEvent(join=pb.JoinRequest(user="Ann", batch=True)))
        events: list[pb.ServerEvent] = []
        while "history_end" not in kinds(events):
            event = await ann.receive()
            assert event is not None
            events += unpack(event)
        assert kinds(events) == ["hello", "welcome", "chat", "chat", "chat", "history_end"]


async def test_a_session_listens_without_joining(server: Bound) -> None:
    """``listen``: the room's traffic without a name, as a TCP ``/listen`` gets it (not
    in ``who`` or ``clients_count``, no notices of its own); then a join on the same
    stream, replayed exactly what it was not sent as a listener: nothing."""
    async with grpc_client(target(server)) as client, \
            await TcpClient.connect(server.tcp_port) as bob:
        listener = await client.session()
        await listener.receive_until("hello")
        await listener.send(pb.ClientEvent(listen=pb.ListenRequest()))
        await listener.send(pb.ClientEvent(ping=pb.PingRequest()))
        assert await listener.receive() == pb.ServerEvent(pong=pb.Pong())  # no error
        await bob.join("Bob")
        notice = await listener.receive_until("system")
        assert (notice.system.event, notice.system.name, notice.system.clients_count) == (
            "join", "Bob", 1)
        await bob.send({"type": "chat", "text": "hi"})
        said = await bob.recv_until(type="chat", text="hi")
        heard = await listener.receive()
        assert heard is not None and (heard.chat.id, heard.chat.text) == (said["id"], "hi")
        await listener.send(pb.ClientEvent(who=pb.WhoRequest()))
        assert (await listener.receive()) == pb.ServerEvent(
            users=pb.WhoReply(users=["Bob"], clients_count=1, room="#lobby"))
        await listener.chat("a listener has no name")
        error = await listener.receive()
        assert error is not None and error.error.code == "not_joined"
        # It joins: its welcome, the end of an empty replay (it was sent everything up
        # to the newest id), its join notice. Bob saw nothing of it before that notice.
        await listener.send(pb.ClientEvent(join=pb.JoinRequest(user="Lis")))
        welcome = await listener.receive()
        assert welcome is not None and welcome.welcome.users == ["Bob", "Lis"]
        assert (await listener.receive()) == pb.ServerEvent(history_end=pb.HistoryEnd(
            last_id=said["id"], complete=True, room="#lobby"))
        joined = await listener.receive()
        assert joined is not None and joined.system.name == "Lis"
        told = await bob.recv()
        assert (told["event"], told["name"], told["clients_count"]) == ("join", "Lis", 2)
        # Another listener comes and goes: nobody is told either way.
        other = await client.session()
        await other.send(pb.ClientEvent(listen=pb.ListenRequest()))
        await other.send(pb.ClientEvent(ping=pb.PingRequest()))
        await other.receive_until("pong")
        await bob.send({"type": "chat", "text": "to two listeners"})
        assert (await other.receive_until("chat")).chat.text == "to two listeners"
        await other.send(pb.ClientEvent(leave=pb.LeaveRequest()))
        await other.drain()
        assert await other.status() == (grpc.StatusCode.OK, "")
        await bob.send({"type": "chat", "text": "after"})
        assert [(m["type"], m.get("text")) for m in (await bob.recv(), await bob.recv())] == [
            ("chat", "to two listeners"), ("chat", "after")]


# ---------------------------------------------------------------- bad input


async def test_bad_events_get_the_protocols_errors_and_the_stream_stays(server: Bound) -> None:
    async with grpc_client(target(server)) as client:
        ann = await client.raw_session()
        await ann.receive_until("hello")

        async def error_for(data: bytes) -> pb.Error:
            await ann.send(data)
            return (await ann.receive_until("error")).error

        assert (await error_for(b"\xff\xff\xff")).code == "bad_json"
        assert (await error_for(pb.ClientEvent().SerializeToString())).code == "unknown_type"
        chat = pb.ClientEvent(chat=pb.ChatRequest(text="hi")).SerializeToString()
        assert (await error_for(chat)).code == "not_joined"
        # `listen` is no error (test_a_session_listens_without_joining); a listener
        # that chats is not_joined as well, and the errors below are a listener's.
        await ann.send(pb.ClientEvent(listen=pb.ListenRequest()).SerializeToString())
        await ann.send(pb.ClientEvent(ping=pb.PingRequest()).SerializeToString())
        assert (await ann.receive()) == pb.ServerEvent(pong=pb.Pong())
        assert (await error_for(chat)).code == "not_joined"
        for name, code in (("", "name_invalid"), ("System", "name_invalid"),
                           ("a\u202eb", "name_invalid")):
            join = pb.ClientEvent(join=pb.JoinRequest(user=name)).SerializeToString()
            assert (await error_for(join)).code == code
        resume = pb.ClientEvent(join=pb.JoinRequest(user="Ann", since=-1)).SerializeToString()
        assert (await error_for(resume)).code == "missing_field"
        join = pb.ClientEvent(join=pb.JoinRequest(user="Ann")).SerializeToString()
        await ann.send(join)
        await ann.receive_until("welcome")
        for text, code in (("", "missing_field"), ("   ", "missing_field"),
                           ("x" * 4097, "too_long")):
            chat = pb.ClientEvent(chat=pb.ChatRequest(text=text)).SerializeToString()
            assert (await error_for(chat)).code == code
        # Still joined, still chatting.
        await ann.send(pb.ClientEvent(chat=pb.ChatRequest(text="fine")).SerializeToString())
        assert (await ann.receive_until("chat")).chat.text == "fine"


async def test_bad_calls_get_invalid_argument_with_the_code(server: Bound) -> None:
    async with grpc_client(target(server)) as client, \
            await TcpClient.connect(server.tcp_port) as bob:
        await bob.join("Bob")
        cases = [
            ([pb.PostRequest(text="no name")], grpc.StatusCode.INVALID_ARGUMENT, "missing_field"),
            ([pb.PostRequest(user="", text="x")], grpc.StatusCode.INVALID_ARGUMENT,
             "missing_field"),
            ([pb.PostRequest(user="Sys\x07", text="x")], grpc.StatusCode.INVALID_ARGUMENT,
             "name_invalid"),
            ([pb.PostRequest(user="Bot", text="")], grpc.StatusCode.INVALID_ARGUMENT,
             "missing_field"),
            ([pb.PostRequest(user="Bot", text="x" * 4097)], grpc.StatusCode.INVALID_ARGUMENT,
             "too_long"),
            ([pb.PostRequest(user="bob", text="x")], grpc.StatusCode.ALREADY_EXISTS,
             "name_taken"),
            ([pb.PostRequest(user="Bot", text="ok"), pb.PostRequest(user="Rob", text="x")],
             grpc.StatusCode.INVALID_ARGUMENT, "name_invalid"),
        ]
        for requests, code, error in cases:
            with pytest.raises(Failed) as failed:
                await client.post(*requests)
            assert failed.value.code == code, requests
            assert failed.value.details.startswith(f"{error}: "), failed.value.details
        # The one that posted before failing says what went out.
        assert "1 posted before it" in failed.value.details
        with pytest.raises(Failed) as failed:
            await client.raw("Post", "stream_unary", [b"\xff"])
        assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert failed.value.details.startswith("bad_json: ")
        with pytest.raises(Failed) as failed:
            await client.history(limit=-1)
        assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert failed.value.details.startswith("missing_field: ")
        with pytest.raises(Failed) as failed:
            await client.raw("History", "unary_stream", [b"\x08"])
        assert failed.value.details.startswith("bad_json: ")
        # Nobody else noticed anything but the one poster that got in.
        await bob.send({"type": "who"})
        assert (await bob.recv_until(type="users"))["users"] == ["Bob"]


async def test_a_message_over_max_line_is_refused_by_size(server: Bound) -> None:
    async with grpc_client(target(server)) as client:
        ann = await client.raw_session()
        await ann.receive_until("hello")
        await ann.send(b"\x12" + b"\x80\x80\x04" + b"x" * 65536)
        with pytest.raises(Failed) as failed:
            await ann.receive_until("error")
        assert failed.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
