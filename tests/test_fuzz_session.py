"""Property tests for a live connection: arbitrary input over memory streams never kills
the session, never leaves it stuck, and another member of the room still chats.

Each example runs its own ``trio.run`` under an autojump clock: a session that hangs
makes the clock jump to the ``fail_after`` bound at once, so "stuck" fails fast and
deterministically, with no real waiting.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed

from tests.support.frames import UPGRADE_REQUEST
from tests.support.memory import Handler, memory_tcp, memory_ws
from tests.support.tcp import TcpClient
from tests.support.ws import wrap_client
from trio_chat import Config
from trio_chat.protocol import ERROR_CODES
from trio_chat.server.rooms import Rooms
from trio_chat.server.session import Session
from trio_chat.transports.admission import Admission
from trio_chat.transports.tcp import TcpTransport, handle_tcp
from trio_chat.transports.ws import handle_ws

FUZZ = settings(max_examples=150, deadline=None)
BOUND = 600  # virtual seconds: far above every timeout and fakelag here, so reaching it = stuck
CONFIG = Config(max_line=1024, max_text=200, queue_size=4096)
SERVER_TLS = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
trustme.CA().issue_cert("localhost").configure_cert(SERVER_TLS)

any_char = st.characters(codec=None, exclude_categories=())
# Strings made mostly of the characters that have broken decoders and encoders.
tricky_text = st.text(
    st.sampled_from(["\ud800", "\udfff", "\x00", "\n", "\u2028", "\ufeff", "\x7f", "é", "{"]),
    max_size=6,
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(any_char, max_size=20)
    | tricky_text,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(any_char, max_size=8), inner, max_size=4),
    max_leaves=12,
)
messages = st.fixed_dictionaries(
    {"type": st.sampled_from(["chat", "join", "leave", "who", "ping"]) | json_values},
    optional={
        "text": st.text(any_char, max_size=40) | tricky_text | json_values,
        "user": st.sampled_from(["Good", "good", "Fuzz", "System", " "]) | json_values,
        "since": json_values,
        "batch": json_values,
    },
)
json_texts = st.builds(
    lambda value, ascii_only: json.dumps(value, ensure_ascii=ascii_only),
    json_values | messages,
    st.booleans(),
)
plain_lines = st.sampled_from(
    ["/nick Fuzz", "/nick Good", "/nick System", "/who", "/ping", "/bogus", "//x", "hi", " "]
)
# TCP input: raw bytes, JSON lines and plain-text lines, cut at arbitrary points.
tcp_pieces = st.one_of(
    st.binary(max_size=200),
    json_texts.map(lambda t: t.encode("utf-8", "surrogatepass") + b"\n"),
    plain_lines.map(lambda t: t.encode() + b"\r\n"),
    st.just(b"x" * 1500),  # over CONFIG.max_line: too_long, and the session closes
)
# WebSocket input: text frames (JSON or not) and binary frames.
ws_messages = st.one_of(
    json_texts,
    st.text(any_char, max_size=100),
    st.binary(max_size=100),
    st.just("x" * 1500),  # over CONFIG.max_line: closed with 1009
)


async def chat_partner(room: Rooms, nursery: trio.Nursery) -> TcpClient:
    """A well-behaved member named Good, on its own memory stream."""
    good = memory_tcp(nursery, room, CONFIG)
    await good.join("Good")
    return good


async def still_chats(good: TcpClient, text: str = "still here") -> None:
    await good.send({"type": "chat", "text": text})
    await good.recv_until(type="chat", user="Good", text=text)


def check_answer(raw: bytes | str) -> list[dict[str, Any]]:
    """Every server message is UTF-8 JSON; errors carry a documented code."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    parsed = [json.loads(part) for part in raw.split("\n") if part]
    for msg in parsed:
        if msg["type"] == "error":
            assert msg["code"] in ERROR_CODES, msg
    return parsed


def run_autojump(scenario: Callable[[], Awaitable[None]]) -> None:
    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))


async def run_session(session: Session, done: trio.Event) -> None:
    await session.run()  # an exception here fails the test through the nursery
    done.set()


@FUZZ
@given(st.lists(tcp_pieces, max_size=12), st.booleans())
def test_tcp_session_survives_arbitrary_input(pieces: list[bytes], hang_up_mid_line: bool) -> None:
    async def scenario() -> None:
        room = Rooms()
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                good = await chat_partner(room, nursery)
                client_stream, server_stream = trio.testing.memory_stream_pair()
                done = trio.Event()
                session = Session(room, CONFIG, TcpTransport(server_stream, CONFIG, "fuzz"))
                nursery.start_soon(run_session, session, done)
                fuzz = TcpClient(client_stream)
                try:
                    for piece in pieces:
                        await fuzz.send_raw(piece)
                    if hang_up_mid_line:
                        await fuzz.send_raw(b'{"type":"chat","te')
                    else:
                        # Probe: the session still answers, or it has closed cleanly.
                        await fuzz.send_raw(b'\n{"type":"ping"}\n')
                except trio.BrokenResourceError:
                    pass  # the session closed on purpose (leave, line too long)
                if not hang_up_mid_line:
                    while (line := await fuzz.line()) is not None:
                        if check_answer(line)[0]["type"] == "pong":
                            break
                await still_chats(good)
                await fuzz.aclose()
                await done.wait()
                await still_chats(good, "after the hang-up")
                await good.aclose()

    run_autojump(scenario)


class ErrorLog(logging.Handler):
    """Collects ERROR records (a handler's "connection failed" traceback)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def no_errors_logged() -> Iterator[None]:
    """The block logs no ERROR under ``trio_chat`` (checked when it ends)."""
    errors = ErrorLog()
    logging.getLogger("trio_chat").addHandler(errors)
    try:
        yield
    finally:
        logging.getLogger("trio_chat").removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]


@FUZZ
@given(st.lists(ws_messages, max_size=12))
def test_ws_session_survives_arbitrary_messages(frames: list[str | bytes]) -> None:
    """The real connection handler (``handle_ws``) over memory streams."""

    async def scenario() -> None:
        room = Rooms()
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                good = await chat_partner(room, nursery)
                client_stream, server_stream = trio.testing.memory_stream_pair()
                done = trio.Event()

                async def serve_one() -> None:
                    await handle_ws(Admission(room, CONFIG), server_stream)
                    done.set()

                nursery.start_soon(serve_one)
                client = await wrap_client(nursery, client_stream, "localhost", "/")
                try:
                    for frame in frames:
                        if isinstance(frame, str):
                            # A client cannot put a lone surrogate in a UTF-8 frame.
                            frame = frame.encode("utf-8", "replace").decode("utf-8")
                        await client.send_message(frame)
                    await client.send_message('{"type":"ping"}')
                    while True:
                        answers = check_answer(await client.get_message())
                        if any(msg["type"] == "pong" for msg in answers):
                            break
                except ConnectionClosed:
                    pass  # the session may close on purpose (leave, message too big)
                await still_chats(good)
                await client.aclose()
                await done.wait()
                await still_chats(good, "after the hang-up")
                await good.aclose()
                nursery.cancel_scope.cancel()  # the client's trio-websocket reader task

    with no_errors_logged():
        run_autojump(scenario)


async def test_ws_oversized_messages_in_a_row(autojump_clock: trio.testing.MockClock) -> None:
    """Regression: a second oversized message after the 1009 close made trio-websocket's
    reader raise LocalProtocolError; the handler now drops the peer without a traceback."""
    room = Rooms()
    with no_errors_logged():
        async with trio.open_nursery() as nursery:
            good = await chat_partner(room, nursery)
            client = await memory_ws(nursery, room, CONFIG)
            await client.send_message('{"type":"join","user":"Big"}')
            await good.recv_until(type="system", event="join", name="Big")
            with pytest.raises(ConnectionClosed):
                for _ in range(3):
                    await client.send_message("x" * (CONFIG.max_line + 1))
                while True:
                    await client.get_message()
            await good.recv_until(type="system", event="leave", name="Big")
            await still_chats(good)
            await good.aclose()
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- explicit cases, live

BIG = Config(max_line=300_000)  # so the decoder, not the line limit, meets these
NASTY = [
    (rb'{"type":"chat","text":"\ud800"}', "bad_json"),
    (rb'{"type":"chat","text":"hi","user":"\udfff"}', "bad_json"),
    (rb'{"type":"join","user":"\ud800"}', "bad_json"),
    (rb'{"type":"\ud800"}', "unknown_type"),
    (b'{"type":"chat","text":"a\x00b"}', "bad_json"),  # raw NUL in a JSON string
    (b'{"x":' + b"[" * 10**5, "bad_json"),
    (b"[" * 10**5, "bad_json"),  # on TCP: not JSON, a chat too long for --max-text
    (b'{"type":"chat","text":' + b"9" * 10**5 + b"}", "bad_json"),
    (b'{"type":"join","user":"Bob","since":1e999999}', "missing_field"),
]


@pytest.mark.parametrize(("data", "code"), NASTY)
async def test_nasty_line_over_tcp(data: bytes, code: str) -> None:
    room = Rooms()
    async with trio.open_nursery() as nursery:
        good = await chat_partner(room, nursery)
        fuzz = memory_tcp(nursery, room, BIG)
        await fuzz.join("Fuzz")
        await fuzz.send_raw(data + b"\n")
        error = await fuzz.recv_until(type="error")
        assert error["code"] == (code if data[:1] == b"{" else "too_long")
        await fuzz.send({"type": "chat", "text": "still talking"})
        await good.recv_until(type="chat", user="Fuzz", text="still talking")
        await still_chats(good)
        await fuzz.aclose()
        await good.recv_until(type="system", event="leave", name="Fuzz")
        await good.aclose()


@pytest.mark.parametrize(("data", "code"), NASTY)
async def test_nasty_frame_over_ws(data: bytes, code: str) -> None:
    room = Rooms()
    async with trio.open_nursery() as nursery:
        good = await chat_partner(room, nursery)
        client = await memory_ws(nursery, room, BIG)
        await client.send_message('{"type":"join","user":"Fuzz"}')
        # A WebSocket text frame is UTF-8: the NUL case stays raw, escapes stay escapes.
        await client.send_message(data.decode("utf-8"))
        while (msg := json.loads(await client.get_message()))["type"] != "error":
            pass
        assert msg["code"] == code
        await client.send_message('{"type":"chat","text":"still talking"}')
        await good.recv_until(type="chat", user="Fuzz", text="still talking")
        await still_chats(good)
        await client.aclose()
        await good.recv_until(type="system", event="leave", name="Fuzz")
        await good.aclose()
        nursery.cancel_scope.cancel()


async def test_line_of_64_kib_plus_one_closes_only_that_connection() -> None:
    room = Rooms()
    config = Config()  # the default 64 KiB line limit
    async with trio.open_nursery() as nursery:
        good = await chat_partner(room, nursery)
        fuzz = memory_tcp(nursery, room, config)
        await fuzz.join("Fuzz")
        await fuzz.send_raw(b"x" * (64 * 1024 + 1) + b"\n")
        error = await fuzz.recv_until(type="error")
        assert error["code"] == "too_long"
        assert await fuzz.eof()
        await good.recv_until(type="system", event="leave", name="Fuzz")
        await still_chats(good)
        await fuzz.aclose()
        await good.aclose()


def feed_handler(
    data: bytes, abort: bool, handler: Handler = handle_ws, *, tls: bool = False
) -> None:
    """Raw bytes at a port (TLS-wrapped if ``tls``), then a hang-up (half-close, or
    abrupt): the handler must end by itself and log no failure."""

    async def scenario() -> None:
        client, server = trio.testing.memory_stream_pair()
        stream: trio.abc.Stream = server
        if tls:
            stream = trio.SSLStream(server, SERVER_TLS, server_side=True)
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(handler, Admission(Rooms(), CONFIG), stream)
                await client.send_all(data)
                if abort:
                    await client.aclose()
                    return
                await client.send_eof()
                while await client.receive_some():
                    pass  # read whatever it answers until it closes
        await client.aclose()

    with no_errors_logged():
        run_autojump(scenario)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=300).map(lambda b: b"GET / HTTP/1.1\r\n" + b),
        st.binary(max_size=300).map(lambda b: UPGRADE_REQUEST + b),  # garbage frames after it
        st.integers(0, len(UPGRADE_REQUEST)).map(lambda n: UPGRADE_REQUEST[:n]),
    ),
    st.booleans(),
)
def test_ws_handler_survives_arbitrary_bytes(data: bytes, abort: bool) -> None:
    feed_handler(data, abort)


def test_ws_garbage_then_hang_up_is_not_a_failure() -> None:
    """Regression: trio-websocket's reader raised ConnectionClosed while answering a
    bad request with 400 to a peer that had already gone; it was logged as a crash."""
    feed_handler(b"\x00", abort=True)
    feed_handler(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", abort=True)


@FUZZ
@given(
    st.binary(max_size=300) | st.just(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
    st.booleans(),
    st.sampled_from(["tcp", "ws"]),
)
def test_tls_handlers_survive_arbitrary_bytes(data: bytes, abort: bool, which: str) -> None:
    """Garbage (or half a ClientHello) to a TLS port, then a hang-up: the handler ends
    by itself and logs no failure."""
    feed_handler(data, abort, handle_tcp if which == "tcp" else handle_ws, tls=True)
