"""``serve(config)``: both listeners in one nursery, around one room."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import signal
from dataclasses import dataclass

import trio

from .config import Config
from .room import Room
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
        return f"ws://{_url_host(self.host)}:{self.ws_port}/"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _port(listeners: list[trio.SocketListener]) -> int:
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def serve(
    config: Config,
    *,
    room: Room | None = None,
    task_status: trio.TaskStatus[Bound] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the chat server until cancelled; reports a :class:`Bound` when listening."""
    room = room if room is not None else Room()
    async with trio.open_nursery() as connections, trio.open_nursery() as listeners:
        await listeners.start(room.run_notices)
        tcp = await listeners.start(serve_tcp_chat, room, config, connections)
        ws = await listeners.start(serve_ws_chat, room, config, connections)
        bound = Bound(config.host, _port(tcp), _port(ws))
        log.info(
            "trio-chat listening: tcp://%s:%d ws://%s:%d",
            _url_host(bound.host),
            bound.tcp_port,
            _url_host(bound.host),
            bound.ws_port,
        )
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


#: Allocations between young-generation collections (CPython's default is 700).
GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Make the cyclic GC cheap for a server holding many connections.

    Every connection keeps hundreds of long-lived Trio objects, and every join
    allocates lists as long as the room; with CPython's defaults a 4,000-client join
    storm spent 10 of its 31 s in collections (1,637 young, 149 middle and 13 full
    ones). A 50,000-allocation young generation made it 0.5 s (and the joins 2x
    faster) for a few MB of garbage waiting a little longer; ``gc.freeze`` takes the
    objects alive at startup (modules, classes) out of every later full collection.
    """
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 10)


#: glibc's M_MMAP_THRESHOLD: allocations at least this big get their own mapping.
MMAP_THRESHOLD = 64 * 1024


def tune_malloc() -> None:
    """Keep big short-lived buffers out of glibc's heap.

    A ``welcome`` lists every member: 120 KB of text (and its bytes and frame) per
    join in a room of 10,000, freed at once. glibc raises its mmap threshold after
    such frees and then carves them from the heap between long-lived connection
    objects, which fragments it: RSS per idle connection measured 59 KB after a
    10,000-client join storm, 42 KB with the threshold pinned at 64 KB (what
    ``MALLOC_MMAP_THRESHOLD_=65536`` does). Elsewhere (not glibc) this does nothing.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, MMAP_THRESHOLD)  # -3: M_MMAP_THRESHOLD in <malloc.h>


def run(config: Config) -> None:
    """Run the server in this process until SIGINT or SIGTERM (the CLI's entry)."""
    tune_gc()
    tune_malloc()
    trio.run(serve_until_signal, config)
