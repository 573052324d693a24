"""``serve(config)``: both listeners in one nursery, around one room and its history."""

from __future__ import annotations

import logging
import signal
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial

import trio

from .config import Config
from .history import open_history
from .room import Room
from .startup import StartupError, find_startup_error, url_host
from .tcp import serve_tcp_chat
from .ws import serve_ws_chat

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bound:
    """Where the server actually listens (ports given as 0 are resolved)."""

    host: str
    tcp_port: int
    ws_port: int

    @property
    def ws_url(self) -> str:
        return f"ws://{url_host(self.host)}:{self.ws_port}/"

    @property
    def page_url(self) -> str:
        """The chat page, for a browser on this machine (a wildcard host becomes loopback)."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://{url_host(host)}:{self.ws_port}/"


def _port(listeners: list[trio.SocketListener]) -> int:
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def serve(
    config: Config,
    *,
    room: Room | None = None,
    task_status: trio.TaskStatus[Bound] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the chat server until cancelled; reports a :class:`Bound` when listening.

    Without a ``room``, opens the history store named by ``config.db`` for this run.
    However it stops (cancelled included), every chat message broadcast has been
    committed to the room's store when this returns.
    """
    async with AsyncExitStack() as stack:
        if room is None:
            room = Room(history=await stack.enter_async_context(open_history(config)))
        try:
            async with trio.open_nursery() as connections, trio.open_nursery() as listeners:
                tcp = await listeners.start(serve_tcp_chat, room, config, connections)
                ws = await listeners.start(serve_ws_chat, room, config, connections)
                bound = Bound(config.host, _port(tcp), _port(ws))
                log.info(
                    "trio-chat listening: tcp://%s:%d ws://%s:%d",
                    url_host(bound.host),
                    bound.tcp_port,
                    url_host(bound.host),
                    bound.ws_port,
                )
                log.info("chat page: %s", bound.page_url)
                task_status.started(bound)
        finally:
            if room.history is not None:
                with trio.CancelScope(shield=True):
                    await room.history.flush()


async def serve_until_signal(config: Config) -> None:
    """Serve until SIGINT or SIGTERM, then stop without a traceback.

    The history store is opened first and closed last: everything the room handed
    to it is committed before this returns.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_history(config) as history, trio.open_nursery() as nursery:
            await nursery.start(partial(serve, config, room=Room(history=history)))
            async for signum in signals:
                log.info("%s received; stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def run(config: Config) -> int:
    """Serve until a signal; return the process exit code."""
    try:
        trio.run(serve_until_signal, config)
    except (StartupError, BaseExceptionGroup) as error:
        startup = find_startup_error(error)
        if startup is None:
            raise
        log.error("%s", startup)
        return startup.exit_code
    return 0
