"""Property tests for the sans-IO decoder: whatever a peer sends, only a ProtocolError
with a documented code comes out, and everything the server would send back encodes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_chat import protocol
from trio_chat.protocol import (
    ERROR_CODES,
    HERE,
    MAX_LINE,
    Chat,
    Join,
    LineBuffer,
    ProtocolError,
    decode_frame,
    decode_json,
    decode_line,
)

FUZZ = settings(max_examples=300, deadline=None)

# Any character, lone surrogates included (json.dumps writes those as \u escapes).
any_char = st.characters(codec=None, exclude_categories=())
# Strings made mostly of the characters that have broken decoders and encoders.
tricky_text = st.text(
    st.sampled_from(["\ud800", "\udfff", "\x00", "\n", "\u2028", "\ufeff", "\x7f", "é", "{"]),
    max_size=6,
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(any_char, max_size=40) | tricky_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(any_char, max_size=10), inner, max_size=5),
    max_leaves=20,
)
# Objects shaped like client messages, with arbitrary values in the known fields.
message_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["chat", "join", "leave", "who", "ping"]) | json_values},
    optional={
        "text": st.text(any_char, max_size=60) | json_values,
        "user": st.text(any_char, max_size=40) | json_values,
        "since": st.integers() | json_values,
        "batch": json_values,
    },
)


def check_outcome(decode: Any, data: Any) -> None:
    """``decode(data)`` returns an event (or None) or raises a documented ProtocolError;
    whatever the server would send in answer is valid UTF-8 JSON."""
    try:
        event = decode(data)
    except ProtocolError as error:
        assert error.code in ERROR_CODES
        answer = error.to_message()
        assert json.loads(answer.encode("utf-8"))["code"] == error.code
        return
    if isinstance(event, Chat):
        protocol.chat("Bob", event.text, protocol.timestamp()).encode("utf-8")
        if event.user is not None:  # the session joins seed-style clients by it
            check_outcome(protocol.validate_name, event.user)
    elif isinstance(event, Join) and event.user is not None:
        protocol.welcome(event.user, protocol.json_array([event.user]), 1, 4096).encode("utf-8")
    elif isinstance(event, str):  # a validated name
        protocol.welcome(event, protocol.json_array([event]), 1, 4096).encode("utf-8")


def dumps(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


@FUZZ
@given(st.binary(max_size=300))
def test_decode_line_arbitrary_bytes(data: bytes) -> None:
    check_outcome(decode_line, data)


@FUZZ
@given(st.text(any_char, max_size=300) | st.binary(max_size=100))
def test_decode_frame_arbitrary_text(data: str | bytes) -> None:
    check_outcome(decode_frame, data)


@FUZZ
@given(json_values | message_like, st.booleans())
def test_decode_arbitrary_json_values(value: Any, ascii_only: bool) -> None:
    text = dumps(value, ascii_only)
    check_outcome(decode_frame, text)
    if ascii_only:  # lines must be UTF-8; non-ASCII dumps may hold raw surrogates
        check_outcome(decode_line, text.encode())


@FUZZ
@given(message_like, st.booleans())
def test_message_like_objects(value: Any, ascii_only: bool) -> None:
    check_outcome(decode_json, dumps(value, ascii_only))


@FUZZ
@given(st.lists(st.binary(max_size=40), max_size=20), st.integers(1, 32))
def test_line_buffer_splits_like_the_whole_stream(chunks: list[bytes], max_line: int) -> None:
    """Any chunking gives the lines of the whole stream, each within the limit, and the
    buffer never holds more than the limit (plus half a ``\\r\\n``)."""
    buffer = LineBuffer(max_line)
    got: list[bytes] = []
    fed = b""
    for chunk in chunks:
        fed += chunk
        try:
            got += buffer.feed(chunk)
        except ProtocolError as error:
            assert error.code == protocol.TOO_LONG and error.fatal
            # Some line (complete, or unfinished at this point) really was too long.
            parts = [p.removesuffix(b"\r") for p in fed.split(b"\n")]
            assert max(map(len, parts)) > max_line
            return
        assert buffer.pending <= max_line + 1
    *complete, _rest = fed.split(b"\n")
    assert got == [line.removesuffix(b"\r") for line in complete]
    assert all(len(line) <= max_line for line in got)


# ---------------------------------------------------------------- explicit cases


def code_of(decode: Any, data: Any) -> str:
    with pytest.raises(ProtocolError) as info:
        decode(data)
    info.value.to_message().encode("utf-8")
    return info.value.code


@pytest.mark.parametrize("decode", [decode_frame, lambda s: decode_line(s.encode())])
@pytest.mark.parametrize(
    "data",
    [
        '{"x":' + "[" * 10**5,
        '{"x":' + "[" * 10**5 + "]" * 10**5 + "}",
        '{"a":' * 10**5 + "1" + "}" * 10**5,
    ],
    ids=["open-brackets", "balanced-brackets", "nested-objects"],
)
def test_deep_nesting_is_bad_json(decode: Callable[[Any], object], data: Any) -> None:
    assert code_of(decode, data) == "bad_json"


def test_deep_brackets_frame_is_bad_json() -> None:
    assert code_of(decode_frame, "[" * 10**5) == "bad_json"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ('{"type":"chat","text":' + "9" * 10**5 + "}", "bad_json"),  # past int max str digits
        ('{"type":"join","user":"Bob","since":' + "9" * 5000 + "}", "bad_json"),
        ('{"type":"join","user":"Bob","since":1e999999}', "missing_field"),  # inf
        ('{"type":' + "1" * 4000 + "}", "unknown_type"),
        ('{"type":-1e400}', "unknown_type"),
    ],
)
def test_huge_numbers(data: str, code: str) -> None:
    assert code_of(decode_frame, data) == code


def test_nul_bytes() -> None:
    # A raw NUL inside a JSON string is invalid JSON; escaped, it is just a character.
    assert code_of(decode_line, b'{"type":"chat","text":"a\x00b"}') == "bad_json"
    assert decode_line(b'{"type":"chat","text":"a\\u0000b"}') == Chat("a\x00b")
    assert decode_line(b"hi\x00there") == Chat("hi\x00there", room=HERE, plain=True)
    line = protocol.chat("Bob", "a\x00b", protocol.timestamp())
    assert "\x00" not in line and json.loads(line)["text"] == "a\x00b"
    assert code_of(decode_line, b'{"type":"join","user":"a\\u0000b"}') == "name_invalid"
    assert code_of(decode_line, b"/nick a\x00b") == "name_invalid"


@pytest.mark.parametrize(
    "data",
    [
        r'{"type":"chat","text":"\ud800"}',
        r'{"type":"chat","text":"ok \udfff ok"}',
        r'{"type":"chat","text":"hi","user":"\ud800"}',
        r'{"type":"join","user":"\udc00Bob"}',
        r'{"type":"\ud800"}',  # regression: the unknown_type error echoed it and broke
    ],
)
def test_lone_surrogates_give_a_clear_error(data: str) -> None:
    assert code_of(decode_frame, data) in {"bad_json", "unknown_type"}
    assert code_of(decode_line, data.encode()) in {"bad_json", "unknown_type"}


def test_lone_surrogate_in_unknown_type_is_not_echoed() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_frame(r'{"type":"\ud800"}')
    assert info.value.code == "unknown_type"
    assert json.loads(info.value.to_message().encode())["text"] == "unknown message type '?'"


def test_surrogate_pair_escape_is_fine() -> None:
    assert decode_frame(r'{"type":"chat","text":"\ud83d\ude00"}') == Chat("\U0001f600")


def test_line_of_64_kib_plus_one_is_too_long() -> None:
    buffer = LineBuffer(MAX_LINE)
    assert buffer.feed(b"a" * MAX_LINE + b"\n") == [b"a" * MAX_LINE]
    with pytest.raises(ProtocolError) as info:
        buffer.feed(b"b" * (MAX_LINE + 1) + b"\n")
    assert info.value.code == "too_long" and info.value.fatal
    # Unfinished: refused as soon as the buffer passes the limit, not at the newline.
    buffer = LineBuffer(MAX_LINE)
    buffer.feed(b"c" * MAX_LINE)
    with pytest.raises(ProtocolError):
        buffer.feed(b"c")


def test_crlf_does_not_count_against_the_line_limit() -> None:
    """Regression: a line of exactly the limit ended by ``\\r\\n`` was refused."""
    buffer = LineBuffer(8)
    assert buffer.feed(b"12345678\r\n") == [b"12345678"]
    assert buffer.feed(b"12345678\r") == []
    assert buffer.feed(b"\n") == [b"12345678"]
    with pytest.raises(ProtocolError):
        buffer.feed(b"12345678\rx")
