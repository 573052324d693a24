"""Is the server alive, and should it get traffic: the answers of ``/healthz`` and
``/readyz``, and the event-loop lag behind them.

*Alive* is the event loop answering at all: ``/healthz`` is served by the same loop as
the chat, so a wedged loop answers nothing and the probe times out. *Ready* is
stricter: every listener accepting (not starting, not stopping), the history store
writable (its writer running, its last batch written), and with ``--redis`` the link
up (not down, not waiting for other servers to restore a Redis that lost its data).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import trio

from ..server.metrics import Histogram

if TYPE_CHECKING:
    from ..server.app import Running

#: Seconds the lag probe sleeps between two looks at the clock.
LAG_INTERVAL: Final = 0.25


def readiness(running: Running) -> list[str]:
    """Why the server should not get traffic now; empty when it is ready."""
    reasons = []
    if running.stopping:
        reasons.append("shutting down")
    elif not running.accepting:
        reasons.append("starting: not accepting connections yet")
    why = running.rooms.delivery.not_ready()
    if why is not None:
        reasons.append(why)
    return reasons


async def watch_event_loop(
    lag: Histogram,
    interval: float = LAG_INTERVAL,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Sleep ``interval`` again and again and record how late each wake-up is: the
    time other tasks held the loop (a long callback, a burst, a blocking call)."""
    task_status.started()
    while True:
        asleep = trio.current_time()
        await trio.sleep(interval)
        lag.observe(max(0.0, trio.current_time() - asleep - interval))
