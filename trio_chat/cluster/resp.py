"""A lean Redis connection for the cluster's two hot loops: reading the streams and
publishing the outbox.

Every chat message costs each server an ``XREAD`` round trip (shared with whatever
else that read brings) and its own server an ``EVALSHA``. Through coredis, one round
trip costs this process about 200 us of CPU (a writer task, a reader task, memory
streams and a request object per command; ``python -m
trio_chat.bench.redis_round_trip``), against about 20-90 us for the same bytes written
and read by the task that needs the answer. These two loops therefore each keep a
connection of their own that speaks RESP2 directly: the command written and the
reply parsed in the calling task, by hiredis's C parser (a Python one cost a read
loop 7% of its server's CPU: about 8 us per entry against 0.5), bulk strings decoded
once (UTF-8). Everything else
(presence, claims, the heartbeat, moderation, ``--redis-wait``'s ``WAIT``) stays on
coredis, which also decides where Redis is (the URL, or the sentinels' primary): the
lean connection opens to the same place with the same credentials and database, and
checks that it reached a primary.

A lost connection raises ``ConnectionError`` (an ``OSError``) and an error reply
:class:`coredis.exceptions.ResponseError`, both of which the link treats as a lost
link (it starts over, as with coredis).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import coredis
import coredis.exceptions
import hiredis
import trio
from coredis.connection import TCPLocation

#: Bytes taken from the socket per receive.
RECEIVE_SIZE: Final = 65536
#: The most bytes read while waiting for one reply (an XREAD page of 512 entries of
#: the longest chat lines is well under this): more means a broken stream.
MAX_REPLY: Final = 64 * 1024 * 1024
#: What the parser returns while the buffer ends inside a reply.
_MORE: Final = object()


@dataclass(frozen=True)
class Endpoint:
    """Where coredis connects, and as whom: what a lean connection needs."""

    host: str | None = None
    port: int = 6379
    path: str | None = None  # a Unix socket
    username: str | None = None
    password: str | None = None
    db: int | None = None
    ssl_context: ssl.SSLContext | None = None

    @classmethod
    def of_pool(cls, pool: Any, location: Any = None) -> Endpoint:
        """The endpoint of a coredis connection pool (``location``: where the
        sentinels said the primary is, for a sentinel pool)."""
        kwargs = pool.connection_kwargs
        where = location if location is not None else pool.location
        host, port, path = None, 6379, None
        if isinstance(where, TCPLocation):
            host, port = where.host, where.port
        else:
            path = where.path
        return cls(host=host, port=port, path=path, username=kwargs.get("username"),
                   password=kwargs.get("password"), db=kwargs.get("db"),
                   ssl_context=kwargs.get("ssl_context"))


#: hiredis's encoder (its stub types the argument as a tuple of one).
_pack: Callable[..., bytes] = hiredis.pack_command


def encode_command(args: tuple[str | int | bytes, ...]) -> bytes:
    """One command as a RESP array of bulk strings (strings in UTF-8)."""
    return _pack(args)


class UnreadableReply(ConnectionError):
    """A reply hiredis cannot read: the stream is broken, the link starts over."""

    def __init__(self, message: str) -> None:
        super().__init__(f"Redis sent an unknown reply type ({message})")


def reply_reader() -> hiredis.Reader:
    """A RESP2 reply parser: bulk and simple strings decoded once (UTF-8, invalid
    bytes replaced), an error reply returned as a ResponseError (raised by the caller,
    once the whole reply is read), a reply it cannot read raised as ConnectionError."""
    return hiredis.Reader(protocolError=UnreadableReply,
                          replyError=coredis.exceptions.ResponseError,
                          encoding="utf-8", errors="replace", notEnoughData=_MORE)


class LeanConnection(trio.abc.AsyncResource):
    """One connection, one command at a time (see the module doc). Use
    :func:`open_lean` to get one."""

    def __init__(self, stream: trio.abc.Stream, *, max_reply: int = MAX_REPLY) -> None:
        self._stream = stream
        self._reader = reply_reader()
        #: The most bytes received while waiting for one reply.
        self.max_reply = max_reply

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def call(self, *args: str | int | bytes) -> Any:
        """Send one command and return its reply (raises ResponseError for an error
        reply, ConnectionError if the connection is lost)."""
        await self.send(*args)
        return await self.reply()

    async def send(self, *args: str | int | bytes) -> None:
        """Send one command without waiting for its reply: commands sent in a row are
        run by Redis in that order, and :meth:`reply` reads their replies in order."""
        try:
            await self._stream.send_all(encode_command(args))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionError(f"lost the connection to Redis: {exc}") from None

    async def reply(self) -> Any:
        """The reply to the oldest command sent and not yet answered."""
        try:
            reply = await self._reply()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionError(f"lost the connection to Redis: {exc}") from None
        if isinstance(reply, coredis.exceptions.ResponseError):
            raise reply
        return reply

    async def _reply(self) -> Any:
        reader = self._reader
        taken = 0  # bytes received for this reply (hiredis drops what it has parsed)
        while True:
            value = reader.gets()
            if value is not _MORE:
                return value
            if taken > self.max_reply:
                raise ConnectionError("a Redis reply longer than the limit")
            data = await self._stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise ConnectionError("Redis closed the connection")
            taken += len(data)
            reader.feed(data)  # type: ignore[arg-type]  # bytes or bytearray: both read

    async def load(self, source: str) -> str:
        """Load a Lua script (``SCRIPT LOAD``); its SHA1, for ``EVALSHA``."""
        return str(await self.call("SCRIPT", "LOAD", source))


async def open_lean(endpoint: Endpoint) -> LeanConnection:
    """Connect, authenticate, select the database, and check that this is a primary
    (a demoted one must not be read or written: the link starts over)."""
    stream: trio.abc.Stream
    if endpoint.path is not None:
        stream = await trio.open_unix_socket(endpoint.path)
    else:
        assert endpoint.host is not None
        stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
        if endpoint.ssl_context is not None:
            tls = trio.SSLStream(stream, endpoint.ssl_context, server_hostname=endpoint.host,
                                 https_compatible=True)
            stream = tls
    connection = LeanConnection(stream)
    try:
        if endpoint.password is not None:
            if endpoint.username:
                await connection.call("AUTH", endpoint.username, endpoint.password)
            else:
                await connection.call("AUTH", endpoint.password)
        if endpoint.db:
            await connection.call("SELECT", endpoint.db)
        role = await connection.call("ROLE")
        if not role or role[0] != "master":
            raise ConnectionError(f"the Redis this link reached is a {role[0]}, not a primary")
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return connection
