"""The sans-IO protocol: every event, every error code, framing limits."""

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from trio_chat import protocol
from trio_chat.protocol import (
    HERE,
    Blank,
    Chat,
    Event,
    Help,
    Join,
    Leave,
    LineBuffer,
    Listen,
    Ping,
    ProtocolError,
    Who,
    decode_frame,
    decode_json,
    decode_line,
)


def error_code(fn: Callable[..., object], *args: Any) -> str:
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    assert info.value.code in protocol.ERROR_CODES
    code: str = info.value.code
    return code


@pytest.mark.parametrize(
    ("line", "event"),
    [
        (b'{"type":"join","user":"Bob"}', Join("Bob")),
        (b'{"type":"join","user":"  Bob  "}', Join("Bob")),
        (b'{"type":"join","user":"Bob","since":17,"batch":true}', Join("Bob", 17, True)),
        (b'{"type":"join","user":"Bob","resume":"t0k3n","since":3}',
         Join("Bob", 3, resume="t0k3n")),
        # a token too long to be one of ours, or empty, is no token: an ordinary join
        (b'{"type":"join","user":"Bob","resume":"%s"}' % (b"x" * 129), Join("Bob")),
        (b'{"type":"join","user":"Bob","resume":""}', Join("Bob")),
        (b'{"type":"listen"}', Listen()),
        (b'{"type":"chat","text":"hi"}', Chat("hi")),
        (b'{"type":"chat","text":"hi","user":"Eve"}', Chat("hi", "Eve")),
        (b'{"type":"leave"}', Leave()),
        (b'{"type":"who"}', Who()),
        (b'{"type":"ping","extra":1}', Ping()),
        ('{"type":"chat","text":"привет 👋"}'.encode(), Chat("привет 👋")),
        (b'  {"type":"who"}  ', Who()),
        # plain text for nc users
        (b"hello there", Chat("hello there", room=HERE, plain=True)),
        (b"/nick Bob", Join("Bob", plain=True)),
        (b"/name  Bob ", Join("Bob", plain=True)),
        (b"/NICK Bob", Join("Bob", plain=True)),
        (b"/who", Who(HERE)),
        (b"/quit", Leave()),
        (b"/exit", Leave()),
        (b"/ping", Ping()),
        (b"/listen", Listen()),
        (b"/help", Help()),
        (b"//slash", Chat("/slash", room=HERE, plain=True)),
    ],
)
def test_decode_line(line: bytes, event: Event) -> None:
    assert decode_line(line) == event


@pytest.mark.parametrize("line", [b"", b"   ", b"\t"])
def test_blank_lines_are_blank_events(line: bytes) -> None:
    """Blank input means nothing, but it is input: flood control counts it."""
    assert decode_line(line) == Blank()
    assert decode_frame(line.decode()) == Blank()


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b'{"type":"chat",', "bad_json"),
        (b"{nope}", "bad_json"),
        (b"\xff\xfe{}", "bad_json"),
        (b'{"type":"chat","text":"\xc3"}', "bad_json"),
        (b'{"type":"chat","text":"\\ud800"}', "bad_json"),
        (b'{"a":' * 100_000, "bad_json"),
        # A line not starting with "{" is plain text: a chat message, too long here.
        (b"[" * 100_000, "too_long"),
    ],
)
def test_decode_line_errors(line: bytes, code: str) -> None:
    assert error_code(decode_line, line) == code


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "bad_json"),
        ("{", "bad_json"),
        ("[]", "not_object"),
        ('"x"', "not_object"),
        ("42", "not_object"),
        ("null", "not_object"),
        ("[" * 100_000 + "]" * 100_000, "bad_json"),
        ('{"a":' * 100_000, "bad_json"),
        ('{"type":"chat","text":' + "9" * 5000 + "}", "bad_json"),
        ("{}", "missing_field"),
        ('{"type":"shout","text":"x"}', "unknown_type"),
        ('{"type":5}', "unknown_type"),
        ('{"type":"chat"}', "missing_field"),
        ('{"type":"chat","text":5}', "missing_field"),
        ('{"type":"chat","text":"   "}', "missing_field"),
        ('{"type":"chat","text":"hi","user":7}', "missing_field"),
        ('{"type":"join"}', "missing_field"),
        ('{"type":"join","user":["Bob"]}', "missing_field"),
        ('{"type":"join","user":""}', "name_invalid"),
        ('{"type":"join","user":"   "}', "name_invalid"),
        ('{"type":"join","user":"' + "x" * 33 + '"}', "name_invalid"),
        ('{"type":"join","user":"Bo\\u0000b"}', "name_invalid"),
        ('{"type":"join","user":"Bo\\nb"}', "name_invalid"),
        ('{"type":"join","user":"Bo\\u202eb"}', "name_invalid"),
        ('{"type":"join","user":"system"}', "name_invalid"),
        ('{"type":"join","user":"Bob","since":-1}', "missing_field"),
        ('{"type":"join","user":"Bob","since":"5"}', "missing_field"),
        ('{"type":"join","user":"Bob","since":true}', "missing_field"),
        ('{"type":"chat","text":"' + "x" * 4097 + '"}', "too_long"),
    ],
)
def test_decode_json_errors(text: str, code: str) -> None:
    assert error_code(decode_json, text) == code


def test_name_limits() -> None:
    assert decode_json('{"type":"join","user":"' + "é" * 32 + '"}') == Join("é" * 32)
    assert protocol.validate_name(" Bob ") == "Bob"


def test_text_limit_is_configurable() -> None:
    assert decode_json('{"type":"chat","text":"hello"}', 5) == Chat("hello")
    assert error_code(decode_json, '{"type":"chat","text":"hello!"}', 5) == "too_long"


def test_binary_frame_is_refused() -> None:
    assert error_code(decode_frame, b'{"type":"who"}') == "bad_json"


def test_frames_are_json_only() -> None:
    # Plain text is a TCP convenience; WebSocket frames are JSON.
    assert error_code(decode_frame, "/who") == "bad_json"


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"/frobnicate", "unknown_type"),
        (b"/nick", "missing_field"),
        (b"/nick System", "name_invalid"),
    ],
)
def test_plain_text_errors(line: bytes, code: str) -> None:
    assert error_code(decode_line, line) == code


class TestLineBuffer:
    def test_splits_lines_across_feeds(self) -> None:
        buf = LineBuffer(100)
        assert buf.feed(b"ab") == []
        assert buf.feed(b"c\nde") == [b"abc"]
        assert buf.feed(b"f\r\ng\n\n") == [b"def", b"g", b""]
        assert buf.pending == 0

    def test_line_at_the_limit_is_fine(self) -> None:
        buf = LineBuffer(10)
        assert buf.feed(b"x" * 10 + b"\n") == [b"x" * 10]

    def test_too_long_without_newline_never_buffers_past_limit(self) -> None:
        buf = LineBuffer(10)
        buf.feed(b"x" * 10)
        with pytest.raises(ProtocolError) as info:
            buf.feed(b"x")
        assert info.value.code == "too_long" and info.value.fatal
        assert buf.pending == 0

    def test_too_long_with_newline(self) -> None:
        buf = LineBuffer(10)
        with pytest.raises(ProtocolError):
            buf.feed(b"x" * 11 + b"\n")

    def test_default_limit_is_64k(self) -> None:
        buf = LineBuffer()
        assert buf.feed(b"x" * 65536 + b"\n") == [b"x" * 65536]
        with pytest.raises(ProtocolError):
            buf.feed(b"x" * 65537)

    def test_scanning_is_linear(self) -> None:
        # Feeding byte by byte must not rescan the whole buffer each time.
        buf = LineBuffer(1 << 20)
        for _ in range(50_000):
            buf.feed(b"x")
        assert buf.feed(b"\n") == [b"x" * 50_000]


class TestEncoding:
    def test_shapes(self) -> None:
        ts = "2026-11-26T18:00:00.123Z"
        assert json.loads(protocol.chat("Bob", "hi", ts)) == {
            "type": "chat", "user": "Bob", "text": "hi", "timestamp": ts,
        }
        users = protocol.json_array(["Ann", "Bob"])
        assert json.loads(protocol.welcome("Bob", users, 2, 4096)) == {
            "type": "welcome", "user": "Bob", "users": ["Ann", "Bob"], "clients_count": 2,
            "max_text": 4096,
        }
        assert json.loads(protocol.system("join", "Bob", "Bob joined the chat", 2, ts)) == {
            "type": "system", "event": "join", "user": "System", "name": "Bob",
            "text": "Bob joined the chat", "clients_count": 2, "timestamp": ts,
        }
        assert json.loads(protocol.users(protocol.json_array(["Ann"]), 1)) == {
            "type": "users", "users": ["Ann"], "clients_count": 1,
        }
        assert json.loads(protocol.pong()) == {"type": "pong"}
        error = ProtocolError("bad_json", "nope")
        assert json.loads(error.to_message()) == {
            "type": "error", "code": "bad_json", "text": "nope",
        }

    def test_one_line_even_with_newlines_in_text(self) -> None:
        line = protocol.chat("Bob", "a\nb\r\nc\u2028", "t")
        assert "\n" not in line and "\r" not in line
        assert json.loads(line)["text"] == "a\nb\r\nc\u2028"

    def test_timestamp_format(self) -> None:
        now = datetime(2026, 11, 26, 18, 0, 0, 123456, tzinfo=UTC)
        assert protocol.timestamp(now) == "2026-11-26T18:00:00.123Z"
        assert protocol.timestamp().endswith("Z")

    def test_unknown_error_codes_are_a_bug(self) -> None:
        with pytest.raises(AssertionError):
            ProtocolError("made_up", "x")
