"""grpcio's asyncio server runs in a thread of its own; this is the way across.

The room, its limits and its history live on Trio; grpcio's server (``grpc.aio``) runs
on an asyncio event loop, which gets its own thread. Every crossing is one hop: Trio
asks the loop with ``call_soon_threadsafe`` and the loop answers through Trio's
``TrioToken.run_sync_soon``. A session crosses once per read and twice per write (there
and back), and a write carries everything queued for the client at once, so the hops
cost per batch, not per message (docs/grpc.md has the figures).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import trio

log = logging.getLogger(__name__)

T = TypeVar("T")


class Bridge:
    """An asyncio event loop in a daemon thread, and the hops to and from it."""

    def __init__(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="trio-chat grpc", daemon=True)
        self._stopped = trio.Event()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            # Whatever is left (calls still open when the server was cancelled) ends here.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
            self.to_trio(self._stopped.set)

    async def aclose(self) -> None:
        """Stop the loop and wait for its thread to end."""
        if not self._thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        with trio.CancelScope(shield=True):
            await self._stopped.wait()
        self._thread.join()

    def to_trio(self, fn: Callable[..., object], *args: Any) -> None:
        """From the loop's thread: run ``fn(*args)`` on Trio soon (never blocks). After
        Trio's run has ended there is nobody to tell: dropped."""
        try:
            self.token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            log.debug("trio has finished; dropped %r", fn)

    def to_loop(self, fn: Callable[..., object], *args: Any) -> None:
        """From Trio: run ``fn(*args)`` on the loop soon (never blocks)."""
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the server is gone
            log.debug("the asyncio loop is closed; dropped %r", fn)

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """From Trio: run ``coroutine`` on the loop and wait for its result. Cancelled,
        it cancels the coroutine there (and does not wait for it). Raises
        ``trio.ClosedResourceError`` once the loop has stopped."""
        try:
            future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
                coroutine, self.loop
            )
        except RuntimeError:  # the loop is closed: the server (or client) is gone
            coroutine.close()
            raise trio.ClosedResourceError("the gRPC event loop has stopped") from None
        done = trio.Event()
        future.add_done_callback(lambda _: self.to_trio(done.set))
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            raise
        return future.result()
