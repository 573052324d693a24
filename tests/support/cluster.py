"""Cluster servers in the test's own event loop (``--redis``), and waits on their link
to Redis: every wait watches :attr:`Cluster.state` and ``state_changed`` (bounded,
never slept)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import coredis
import trio
import trio.testing

from trio_chat import Bound, Config, serve
from trio_chat.cluster import PREFIX, Cluster, LinkState, open_cluster
from trio_chat.protocol import name_key, skeleton
from trio_chat.server.seats import token_key

from .tcp import TcpClient
from .waits import WAIT, until
from .ws import WsClient, ws_client


@asynccontextmanager
async def node(config: Config) -> AsyncIterator[tuple[Cluster, Bound]]:
    """One cluster server in this event loop."""
    async with open_cluster(config) as cluster, trio.open_nursery() as nursery:
        bound: Bound = await nursery.start(partial(serve, config, rooms=cluster.rooms))
        yield cluster, bound
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def ws(port: int) -> AsyncIterator[WsClient]:
    """A WebSocket client of the server on ``port``."""
    async with ws_client(port) as conn:
        yield WsClient(conn)


async def unlinked(*clusters: Cluster) -> None:
    """Wait until each cluster has lost its link to Redis (and delivers locally)."""
    with trio.fail_after(WAIT):
        for cluster in clusters:
            while cluster.connected:
                await cluster.state_changed.wait()


@asynccontextmanager
async def relinking(*clusters: Cluster, wait: float = WAIT) -> AsyncIterator[None]:
    """Expect each cluster's link to drop and come back because of what the block
    does; on the way out, wait (at most ``wait`` seconds) until it has. Each cluster is
    watched from before the block, since a short outage may be over before a later
    look."""
    relinked = [trio.Event() for _ in clusters]

    async def watch(cluster: Cluster, done: trio.Event) -> None:
        while cluster.connected:
            await cluster.state_changed.wait()
        while cluster.state is not LinkState.UP:
            await cluster.state_changed.wait()
        done.set()

    async with trio.open_nursery() as watchers:
        for cluster, done in zip(clusters, relinked, strict=True):
            assert cluster.state is LinkState.UP
            watchers.start_soon(watch, cluster, done)
        await trio.testing.wait_all_tasks_blocked()  # every watcher is watching
        yield
        with trio.fail_after(wait):
            for done in relinked:
                await done.wait()


async def linked(*clusters: Cluster) -> None:
    """Wait until each cluster's link to Redis is up: after :func:`unlinked`, linked
    again."""
    with trio.fail_after(WAIT):
        for cluster in clusters:
            while cluster.state is not LinkState.UP:
                await cluster.state_changed.wait()


async def chats(client: TcpClient | WsClient, count: int) -> list[dict[str, Any]]:
    """The next ``count`` chat messages, skipping notices."""
    return [await client.recv_until(type="chat") for _ in range(count)]


async def resume(port: int, name: str, since: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A fresh TCP client joining with ``since``: its replayed chats and history_end. It
    leaves (``leave``) before it closes, so the name is free again at once (a lost
    connection's seat is held for ``--resume-grace``) on this server, and in Redis a
    moment later: another server may still refuse it meanwhile (``name_taken``)."""
    async with await TcpClient.connect(port) as client:
        await client.send({"type": "join", "user": name, "since": since})
        welcome = await client.recv()
        assert welcome["type"] == "welcome", welcome  # not a wait on a refusal
        replayed = []
        while (msg := await client.recv())["type"] != "history_end":
            replayed.append(msg)
        await client.send({"type": "leave"})
        await client.eof()
        return replayed, msg


async def token_in_redis(config: Config, token: str) -> None:
    """Wait until the server holding a seat has put its token in Redis (it does so
    right after the connection is lost, on its way to Redis like every presence
    change); a resume elsewhere before that is an ordinary join (``name_taken``),
    which a client retries."""
    assert config.redis is not None
    async with coredis.Redis.from_url(config.redis, decode_responses=True) as client:
        with trio.fail_after(WAIT):
            while not await client.exists([f"{PREFIX}resume:{token_key(token)}"]):
                pass  # each look is a round trip to Redis



async def name_released(name: str, *clusters: Cluster, url: str | None = None) -> None:
    """Wait until ``name`` is free for a join anywhere: no claim of it left in Redis
    (``url``, else the clusters' own), and none of ``clusters`` sees it held on another
    server. A server answers a ``leave`` (and closes) before its release reaches Redis,
    on its way there like every presence change, and each server learns it from the
    events stream; a join before that is refused (``name_taken``)."""
    urls = {url} if url is not None else {c.config.redis for c in clusters if c.config.redis}
    for redis_url in urls:
        async with coredis.Redis.from_url(redis_url, decode_responses=True) as client:
            with trio.fail_after(WAIT):
                while await client.exists([f"{PREFIX}name:{skeleton(name)}"]):
                    pass  # each look is a round trip to Redis
    for cluster in clusters:
        await until(partial(_free, cluster, name))


def _free(cluster: Cluster, name: str) -> bool:
    """No other server holds ``name`` (or the same name in another case), as
    ``cluster`` sees them."""
    return name_key(name) not in {name_key(other) for other in cluster.other_names()}
