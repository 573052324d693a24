"""Reconnect churn leaves nothing behind (issue 20: writer tasks run in the server's
writers nursery, not in a nursery per session).

A hostile or merely flaky client population connects, joins, asks for replays, walks
away mid-replay, vanishes without a word and comes back, over TCP and WebSocket; once
they are gone, the server holds exactly the tasks it held before them: no writer, no
reader, no ping task outlives its connection.
"""

from __future__ import annotations

import pytest
import trio

from tests.support.tcp import TcpClient
from tests.support.waits import until
from tests.support.ws import WsClient, ws_client
from trio_chat import Bound

pytestmark = pytest.mark.slow

ROUNDS = 30


def tasks() -> int:
    """Every task alive in this run (the test's, and the server's it runs)."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count, stack = 0, [root]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


async def test_churn_of_joins_replays_and_vanishing_peers_leaves_no_task_behind(
    server: Bound,
) -> None:
    async with await TcpClient.connect(server.tcp_port) as talker:
        await talker.join("Talker")
        for n in range(200):  # a history for the replays to walk
            await talker.send({"type": "chat", "text": f"{n} " + "x" * 200})
        await talker.recv_until(type="chat", text="199 " + "x" * 200)
        await trio.testing.wait_all_tasks_blocked()
        baseline = tasks()
        for n in range(ROUNDS):
            # Joins and leaves at once; joins with a whole replay and hangs up before
            # reading it (its writer is busy); sends garbage and a blank line; a WebSocket
            # joins with a replay and goes.
            async with await TcpClient.connect(server.tcp_port) as quick:
                await quick.join(f"quick{n}")
            replaying = await TcpClient.connect(server.tcp_port)
            await replaying.send({"type": "join", "user": f"replay{n}", "since": 0})
            await replaying.recv_until(type="welcome")
            await replaying.aclose()
            async with await TcpClient.connect(server.tcp_port) as rude:
                await rude.send_raw(b"\n{not json\n\x00\xff\n")
                await rude.recv_until(type="error")
            async with ws_client(server.ws_port) as conn:
                ws = WsClient(conn)
                await ws.join(f"web{n}", since=0)
        await talker.send({"type": "chat", "text": "still here"})
        await talker.recv_until(type="chat", text="still here")
        await until(lambda: tasks() == baseline)
