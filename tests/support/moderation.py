"""A real server with moderation in a real SQLite file, and what tests of moderation
need around it: a clock for bans that the test moves, logged-in connections, clients
from another loopback address.

Connections log in for real: :meth:`Moderated.login` registers the account (or logs
in to it) over the client's own connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import trio

from tests.support.clients import Client
from tests.support.config import TEST_CONFIG
from tests.support.tcp import TcpClient
from tests.support.ws import WsClient, ws_over
from trio_chat import Bound, Config, serve
from trio_chat.accounts.service import open_accounts
from trio_chat.history.sqlite import SqliteStore, open_history
from trio_chat.history.writer import running
from trio_chat.moderation.service import ModerationService, SqliteBackend
from trio_chat.moderation.store import ModerationStore
from trio_chat.protocol.names import name_key
from trio_chat.server.delivery import LocalDelivery
from trio_chat.server.moderating import Moderator
from trio_chat.server.rooms import Rooms

#: The password of the tests' accounts.
PASSWORD = "correct horse battery"
#: Where the ban clock starts (Unix seconds: 2026-01-01).
EPOCH = 1_767_225_600.0
#: A second loopback address for a client to be banned from (Linux routes 127/8).
OTHER_ADDRESS = "127.0.0.2"


@dataclass
class WallClock:
    """The clock of bans and the audit log, moved by the test (no sleeping)."""

    now: float = EPOCH

    def __call__(self) -> float:
        return self.now


@dataclass
class Moderated:
    """A running server, its rooms (to log connections in) and its ban clock."""

    bound: Bound
    rooms: Rooms
    clock: WallClock
    db: str
    registered: set[str] = field(default_factory=set)

    async def login(self, client: Client, name: str) -> None:
        """``client``, joined as ``name``, registers that account (logs in to it, if
        it exists): the name stays, so no new ``welcome``; a ``token`` follows."""
        kind = "login" if name_key(name) in self.registered else "register"
        await client.send({"type": kind, "user": name, "password": PASSWORD})
        await client.recv_until(type="token")
        self.registered.add(name_key(name))


def moderated_config(tmp_path: Path, **changes: object) -> Config:
    """TEST_CONFIG on a real database, with ``Root`` a server admin; rooms are
    created freely (their rate is tested elsewhere)."""
    return replace(TEST_CONFIG, db=str(tmp_path / "chat.db"), admins=("Root",),
                   room_create_rate=0, **changes)  # type: ignore[arg-type]


@asynccontextmanager
async def moderated_server(
    config: Config, *, watch_interval: float = 0.05
) -> AsyncIterator[Moderated]:
    """A server as ``serve`` runs it on ``config.db`` (history and moderation in the
    one file), its ban clock the test's."""
    clock = WallClock()
    admins = tuple(name_key(name) for name in config.admins)
    async with (
        open_history(config) as history,
        open_accounts(config) as accounts,
        trio.open_nursery() as nursery,
    ):
        store = await trio.to_thread.run_sync(ModerationStore, config.db)
        service = ModerationService(SqliteBackend(store), admins=lambda: admins, wall=clock)
        rooms = Rooms(LocalDelivery(history), config=config)
        rooms.accounts = accounts
        rooms.moderation = Moderator(rooms, service, watch_interval=watch_interval)
        bound: Bound = await nursery.start(partial(serve, config, rooms=rooms))
        try:
            yield Moderated(bound, rooms, clock, config.db)
        finally:
            nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await rooms.delivery.flush()
                await service.aclose()


@asynccontextmanager
async def client_from(bound: Bound, kind: str, address: str) -> AsyncIterator[Client]:
    """A client of ``bound`` over ``kind`` whose connection comes from ``address``."""
    port = bound.tcp_port if kind == "tcp" else bound.ws_port
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=address)
    if kind == "tcp":
        async with TcpClient(stream) as tcp:
            yield tcp
    else:
        async with ws_over(stream, "127.0.0.1", "/") as conn:
            yield WsClient(conn)


def history_db(path: Path) -> str:
    """A database as a server leaves it: the history's tables and version."""

    async def create() -> None:
        async with running(SqliteStore(str(path), keep=10), 1):
            pass

    trio.run(create)
    return str(path)
