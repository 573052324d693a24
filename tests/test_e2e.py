"""End to end over real loopback sockets on ephemeral ports: TCP and WebSocket in one room."""

import contextlib
import json
from dataclasses import replace

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.support.config import TEST_CONFIG
from tests.support.tcp import TcpClient
from tests.support.ws import WsClient, close_reason, ws_client
from trio_chat import Bound, serve


async def chat_works(server: Bound, sender_name: str = "Checker") -> None:
    """Another client can still join and chat: the server and room are unharmed."""
    async with await TcpClient.connect(server.tcp_port) as tcp, ws_client(server.ws_port) as conn:
        ws = WsClient(conn)
        await tcp.join(sender_name)
        await ws.join(sender_name + "WS")
        await tcp.send({"type": "chat", "text": "still alive"})
        msg = await ws.recv_until(type="chat")
        assert (msg["user"], msg["text"]) == (sender_name, "still alive")


async def test_tcp_and_ws_share_a_room(server: Bound) -> None:
    async with await TcpClient.connect(server.tcp_port) as bob, ws_client(server.ws_port) as conn:
        await bob.join("Bob")
        alice = WsClient(conn)
        welcome = await alice.join("Alice")
        token = welcome.pop("resume")  # the secret that takes the seat back (see test_resume)
        assert isinstance(token, str) and len(token) >= 20
        assert welcome == {"type": "welcome", "room": "#lobby", "user": "Alice",
                           "users": ["Bob", "Alice"], "topic": "", "clients_count": 2,
                           "max_text": 4096}
        notice = await bob.recv_until(type="system", event="join", name="Alice")
        assert notice["text"] == "Alice joined the chat" and notice["clients_count"] == 2
        await bob.send({"type": "chat", "text": "hi alice"})
        msg = await alice.recv_until(type="chat")
        assert msg["user"] == "Bob" and msg["text"] == "hi alice"
        assert msg["timestamp"].endswith("Z") and len(msg["timestamp"]) == 24
        await alice.send({"type": "chat", "text": "hi bob 👋"})
        assert (await bob.recv_until(type="chat", user="Alice"))["text"] == "hi bob 👋"
        await alice.send({"type": "who"})
        assert (await alice.recv_until(type="users"))["users"] == ["Bob", "Alice"]
        await bob.send({"type": "leave"})
        assert await bob.eof()
    # Bob left; Alice's socket closed without a word: her seat is kept for a resume
    # (--resume-grace, tests/test_resume.py), her name still taken.
    async with await TcpClient.connect(server.tcp_port) as carol:
        welcome = await carol.join("Carol")
        assert welcome["users"] == ["Alice", "Carol"]


async def test_per_sender_order_is_kept(server: Bound) -> None:
    async with await TcpClient.connect(server.tcp_port) as a, ws_client(server.ws_port) as conn:
        b = WsClient(conn)
        await a.join("A")
        await b.join("B")
        await a.send_raw(b"".join(b"n%d\n" % n for n in range(200)))
        texts = [(await b.recv_until(type="chat"))["text"] for _ in range(200)]
        assert texts == [f"n{n}" for n in range(200)]


async def test_plain_text_nc_session(server: Bound) -> None:
    async with await TcpClient.connect(server.tcp_port) as nc, \
            await TcpClient.connect(server.tcp_port) as ann:
        await ann.join("Ann")
        await nc.send_raw(b"/nick Bob\r\n")
        assert (await nc.recv())["type"] == "welcome"
        await nc.send_raw(b"hello everyone\r\n")
        msg = await ann.recv_until(type="chat")
        assert (msg["user"], msg["text"]) == ("Bob", "hello everyone")
        await nc.send_raw(b"/who\n")
        assert (await nc.recv_until(type="users"))["users"] == ["Ann", "Bob"]
        await nc.send_raw(b"/nick Rob\n")
        notice = await ann.recv_until(type="system", event="rename")
        assert (notice["old"], notice["name"]) == ("Bob", "Rob")
        await nc.send_raw(b"/quit\n")
        assert await nc.eof()
        assert (await ann.recv_until(type="system", event="leave"))["name"] == "Rob"


async def test_seed_style_client_chats_without_joining(server: Bound) -> None:
    """The lab report's client.py: never joins, names itself in every chat message."""
    async with ws_client(server.ws_port) as seed, ws_client(server.ws_port) as conn:
        other = WsClient(conn)
        await other.join("Other")
        await seed.send_message(json.dumps(
            {"type": "chat", "user": "Ivan", "text": "привет", "timestamp": "12:00:00"}))
        # No welcome: it never asked to join, and would print one as a chat from nobody.
        got = [json.loads(await seed.get_message()) for _ in range(2)]
        assert [m["type"] for m in got] == ["system", "chat"]
        # What client.py prints: text and clients_count of system notices ...
        assert got[0]["text"] == "Ivan joined the chat" and got[0]["clients_count"] == 2
        # ... and timestamp, user, text of chats, stamped by the server.
        assert got[1]["user"] == "Ivan" and got[1]["text"] == "привет"
        assert got[1]["timestamp"] != "12:00:00"
        msg = await other.recv_until(type="chat")
        assert (msg["user"], msg["text"]) == ("Ivan", "привет")
        # Its second message does not join again.
        await seed.send_message(json.dumps({"type": "chat", "user": "Ivan", "text": "2"}))
        assert json.loads(await seed.get_message())["text"] == "2"


async def test_nobody_can_speak_as_someone_else(server: Bound) -> None:
    async with await TcpClient.connect(server.tcp_port) as eve, \
            await TcpClient.connect(server.tcp_port) as bob:
        await bob.join("Bob")
        await eve.join("Eve")
        await eve.send({"type": "chat", "user": "Bob", "text": "I am Bob"})
        msg = await bob.recv_until(type="chat")
        assert msg["user"] == "Eve"
        await eve.send({"type": "chat", "user": "System", "text": "fake notice"})
        assert (await bob.recv_until(type="chat"))["user"] == "Eve"


async def test_name_clash(server: Bound) -> None:
    async with await TcpClient.connect(server.tcp_port) as a, ws_client(server.ws_port) as conn:
        await a.join("Bob")
        b = WsClient(conn)
        await b.send({"type": "join", "user": "BOB"})
        error = await b.recv()
        assert error == {"type": "error", "code": "name_taken", "text": "name 'BOB' is taken"}
        # The connection stays; another name works.
        await b.join("Bobby")
        # A seed-style client cannot choose another name: it joins as the first free
        # variant, and is told so (tests/test_first_contact.py runs the seed's client).
        async with ws_client(server.ws_port) as seed:
            await seed.send_message(json.dumps({"type": "chat", "user": "bob", "text": "x"}))
            told = json.loads(await seed.get_message())
            assert (told["type"], told["event"], told["name"]) == ("system", "variant", "bob2")


TCP_BAD_INPUTS = [
    (b"{not json\n", "bad_json"),
    (b'{"type":"chat","text":"hi"\n', "bad_json"),
    (b"\xff\xfe\xfd\n", "bad_json"),
    (b'{"type":"chat","text":"\\ud800"}\n', "bad_json"),
    (b'{"type":"chat","text":' + b"9" * 5000 + b"}\n", "bad_json"),
    (b'{"a":' + b"[" * 60_000 + b"\n", "bad_json"),
    (b'{"type":"dance"}\n', "unknown_type"),
    (b'{"text":"no type"}\n', "missing_field"),
    (b'{"type":"chat"}\n', "missing_field"),
    (b'{"type":"chat","text":null}\n', "missing_field"),
    (b'{"type":"chat","text":["x"]}\n', "missing_field"),
    (b'{"type":"join","user":42}\n', "missing_field"),
    (b'{"type":"join","user":"bad\\u0007name"}\n', "name_invalid"),
    (b'{"type":"chat","text":"' + b"x" * 4097 + b'"}\n', "too_long"),
    (b'{"type":"chat","text":"hi"}\n', "not_joined"),
    (b"/bogus\n", "unknown_type"),
]


@pytest.mark.parametrize(("data", "code"), TCP_BAD_INPUTS)
async def test_tcp_bad_input_gets_an_error_and_the_connection_stays(
    server: Bound, data: bytes, code: str
) -> None:
    async with await TcpClient.connect(server.tcp_port) as bad:
        await bad.send_raw(b"\n")  # an empty line is ignored
        await bad.send_raw(data)
        error = await bad.recv()
        assert error["type"] == "error" and error["code"] == code and error["text"]
        await bad.send({"type": "ping"})
        assert await bad.recv() == {"type": "pong"}
    await chat_works(server)


WS_BAD_INPUTS = [
    ("{not json", "bad_json"),
    ("[]", "not_object"),
    ('"x"', "not_object"),
    ("42", "not_object"),
    ("hello", "bad_json"),
    ('{"type":"dance"}', "unknown_type"),
    ('{"type":"chat","text":5}', "missing_field"),
    ('{"type":"chat","text":"x","user":{}}', "missing_field"),
    ('{"type":"join","user":"' + "x" * 40 + '"}', "name_invalid"),
    ('{"type":"chat","text":"hi"}', "not_joined"),
    (b"\x00binary", "bad_json"),
]


@pytest.mark.parametrize(("frame", "code"), WS_BAD_INPUTS)
async def test_ws_bad_input_gets_an_error_and_the_connection_stays(
    server: Bound, frame: str | bytes, code: str
) -> None:
    async with ws_client(server.ws_port) as bad:
        await bad.send_message(" ")  # a blank frame is ignored
        await bad.send_message(frame)
        error = json.loads(await bad.get_message())
        assert error["type"] == "error" and error["code"] == code and error["text"]
        await bad.send_message('{"type":"ping"}')
        assert json.loads(await bad.get_message()) == {"type": "pong"}
    await chat_works(server)


async def test_tcp_line_over_the_limit_is_refused_and_closed(server: Bound) -> None:
    async with await TcpClient.connect(server.tcp_port) as watcher, \
            await TcpClient.connect(server.tcp_port) as bad:
        await watcher.join("Watcher")
        await bad.join("Bad")
        await watcher.recv_until(type="system", event="join", name="Bad")
        # 64 KiB + 1 with no newline: refused before the line ends.
        with contextlib.suppress(trio.BrokenResourceError):
            await bad.send_raw(b"x" * (64 * 1024 + 1))
        error = await bad.recv_until(type="error")
        assert error["code"] == "too_long"
        assert await bad.eof()
        assert (await watcher.recv_until(type="system", event="leave"))["name"] == "Bad"
    await chat_works(server)


async def test_welcome_tells_the_text_limit_which_the_server_keeps() -> None:
    """``welcome.max_text`` is ``--max-text``: a client that keeps to it is never refused
    (one more character is ``too_long`` and the connection stays open)."""
    async with trio.open_nursery() as nursery:
        server: Bound = await nursery.start(serve, replace(TEST_CONFIG, max_text=10))
        async with await TcpClient.connect(server.tcp_port) as tcp, \
                ws_client(server.ws_port) as conn:
            assert (await tcp.join("Tcp"))["max_text"] == 10
            ws = WsClient(conn)
            assert (await ws.join("Ws"))["max_text"] == 10
            await tcp.send({"type": "chat", "text": "x" * 10})
            assert (await ws.recv_until(type="chat"))["text"] == "x" * 10
            await ws.send({"type": "chat", "text": "y" * 11})
            assert (await ws.recv_until(type="error"))["code"] == "too_long"
            await ws.send({"type": "chat", "text": "z" * 10})
            assert (await tcp.recv_until(type="chat", user="Ws"))["text"] == "z" * 10
        nursery.cancel_scope.cancel()


async def test_ws_message_over_the_limit_is_closed_with_1009(server: Bound) -> None:
    async with ws_client(server.ws_port) as bad:
        await bad.send_message("x" * (64 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as info:
            await bad.get_message()
        assert close_reason(info.value).code == 1009
    await chat_works(server)


async def test_silent_clients_and_mid_line_disconnects_harm_nobody(server: Bound) -> None:
    silent_tcp = await trio.open_tcp_stream("127.0.0.1", server.tcp_port)
    silent_ws = await trio.open_tcp_stream("127.0.0.1", server.ws_port)  # not even a handshake
    async with silent_tcp, silent_ws:
        half = await trio.open_tcp_stream("127.0.0.1", server.tcp_port)
        await half.send_all(b'/nick Half\n{"type":"chat","te')
        await half.aclose()
        async with ws_client(server.ws_port) as conn:
            ws = WsClient(conn)
            await ws.join("Mid")
            await conn.send_message('{"type":"chat",')
            await ws.recv_until(type="error")
        await chat_works(server)
