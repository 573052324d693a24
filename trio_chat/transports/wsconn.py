"""The one place trio-chat reaches into trio-websocket: writing pre-built frames.

A broadcast sends one message to every member. Through trio-websocket's public
``send_message`` each connection would encode it again (wsproto) and take the
connection's lock once per message; instead every message's frame is built once
(:attr:`trio_chat.protocol.Encoded.frame`) and a writer sends everything queued for a
connection in one ``send_all`` on the connection's stream, under the lock
trio-websocket takes for its own writes (pings, pongs, the close frame), so frames
never interleave. That needs two private attributes of ``WebSocketConnection``:
``_stream`` and ``_stream_lock``. pyproject.toml pins trio-websocket to the releases
this was tested with, and ``tests/test_wsconn.py`` fails loudly if they change.

Memory per idle connection (issue 20) takes a third, ``_wsproto`` (the library's
``wsproto.WSConnection``): once the opening handshake is over, :func:`shed_handshake`
lets go of wsproto's handshake state (an h11 connection, the request, an event
deque: about 2 KB a connection), which wsproto keeps for the connection's life.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

import trio
from trio_websocket import WebSocketConnection
from wsproto import WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import Event

#: The private attributes used here, checked by :func:`check` and by the tests.
PRIVATE_ATTRIBUTES: Final = ("_stream", "_stream_lock", "_wsproto")


def check(ws: WebSocketConnection) -> None:
    """Raise ``RuntimeError`` if ``ws`` lacks what :func:`send_frames` uses (a
    trio-websocket release this module was not written for)."""
    missing = [name for name in PRIVATE_ATTRIBUTES if not hasattr(ws, name)]
    if not missing:
        if not isinstance(ws._stream_lock, trio.StrictFIFOLock):
            missing = ["_stream_lock"]
        elif not isinstance(ws._wsproto, WSConnection):
            missing = ["_wsproto"]
    if missing:
        raise RuntimeError(
            "trio-websocket's WebSocketConnection changed (missing or different: "
            f"{', '.join(missing)}); trio_chat.transports.wsconn needs updating"
        )


class _Finished:
    """What stands for wsproto's handshake once it is over: the events it still held
    (none, as a rule), then nothing. ``WSConnection`` asks its handshake only for
    ``events()`` once the connection is open."""

    __slots__ = ("_left",)

    def __init__(self, left: list[Event]) -> None:
        self._left = left

    def events(self) -> Iterator[Event]:
        left, self._left = self._left, []
        return iter(left)


#: Shared by every connection whose handshake left no events behind.
_FINISHED: Final = _Finished([])


def shed_handshake(ws: WebSocketConnection) -> None:
    """Let go of wsproto's opening-handshake state, once the connection is open
    (after ``accept()``); does nothing before."""
    proto = ws._wsproto
    if proto.connection is None or proto.state is not ConnectionState.OPEN:
        return
    left = list(proto.handshake.events())
    proto.handshake = _Finished(left) if left else _FINISHED  # type: ignore[assignment]


def writable_now(ws: WebSocketConnection) -> bool:
    """Nothing is being written on the connection (its lock is free) and it is not
    closing: a direct write (:meth:`.ws.WsTransport.send_now`) may go now."""
    return ws.closed is None and not ws._stream_lock.locked()


async def send_frames(
    ws: WebSocketConnection, data: bytes, stream: trio.abc.SendStream | None = None,
    pending: Callable[[], bytes] | None = None,
) -> None:
    """Write already-framed bytes to the connection, after anything trio-websocket is
    writing. Raises ``trio.ClosedResourceError`` once the connection is closing
    (nothing may follow the close frame) and ``trio.BrokenResourceError`` if the peer
    is gone.

    ``stream`` is the socket (or TLS) stream under the one trio-websocket was given,
    if that one only wraps it (:class:`~.wsguard.FrameGuard`): a broadcast's writes go
    straight to it, not through a layer of coroutines per wrapper. ``pending`` gives
    (and forgets) the rest of a partial direct write, written first."""
    async with ws._stream_lock:
        if ws.closed is not None:
            raise trio.ClosedResourceError("the WebSocket is closing")
        if pending is not None:
            data = pending() + data
        await (ws._stream if stream is None else stream).send_all(data)
