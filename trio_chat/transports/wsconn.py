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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import trio
from trio_websocket import WebSocketConnection

#: The private attributes used here, checked by :func:`check` and by the tests.
PRIVATE_ATTRIBUTES: Final = ("_stream", "_stream_lock")


def check(ws: WebSocketConnection) -> None:
    """Raise ``RuntimeError`` if ``ws`` lacks what :func:`send_frames` uses (a
    trio-websocket release this module was not written for)."""
    missing = [name for name in PRIVATE_ATTRIBUTES if not hasattr(ws, name)]
    if missing or not isinstance(ws._stream_lock, trio.StrictFIFOLock):
        raise RuntimeError(
            "trio-websocket's WebSocketConnection changed (missing or different: "
            f"{', '.join(missing) or '_stream_lock'}); trio_chat.transports.wsconn needs "
            "updating"
        )


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
