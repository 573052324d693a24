"""``serve(config)``: both listeners in one nursery, around one room."""

from __future__ import annotations

import logging
import signal
import ssl
from dataclasses import dataclass
from functools import partial

import trio

from . import tls
from .config import Config
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
    #: Both ports speak TLS (``--tls-cert``): tls:// and wss://.
    tls: bool = False

    @property
    def tcp_url(self) -> str:
        return f"{'tls' if self.tls else 'tcp'}://{url_host(self.host)}:{self.tcp_port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{url_host(self.host)}:{self.ws_port}/"

    @property
    def page_url(self) -> str:
        """The chat page, for a browser on this machine (a wildcard host becomes loopback)."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"{'https' if self.tls else 'http'}://{url_host(host)}:{self.ws_port}/"


async def serve(
    config: Config,
    *,
    room: Room | None = None,
    task_status: trio.TaskStatus[Bound] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the chat server until cancelled; reports a :class:`Bound` when listening."""
    room = room if room is not None else Room()
    context = None
    if config.tls_cert:
        try:
            context = tls.server_context(config.tls_cert, config.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"cannot load TLS certificate/key: {exc}") from None
    async with trio.open_nursery() as connections, trio.open_nursery() as listeners:
        tcp = await listeners.start(
            partial(serve_tcp_chat, room, config, connections, ssl_context=context)
        )
        ws = await listeners.start(
            partial(serve_ws_chat, room, config, connections, ssl_context=context)
        )
        bound = Bound(
            config.host,
            tls.listener_port(tcp[0]),
            tls.listener_port(ws[0]),
            tls=context is not None,
        )
        log.info("trio-chat listening: %s %s", bound.tcp_url, bound.ws_url)
        log.info("chat page: %s", bound.page_url)
        task_status.started(bound)


async def serve_until_signal(config: Config) -> None:
    """Serve until SIGINT or SIGTERM, then stop without a traceback."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, config)
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
