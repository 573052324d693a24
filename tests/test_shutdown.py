"""Graceful shutdown: stop accepting, tell everyone, drain, close (1001), return."""

from __future__ import annotations

import json
import signal

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.support.processes import server_process
from tests.support.tcp import Message, TcpClient
from tests.support.ws import WsClient, close_reason, ws_client
from trio_chat import Bound, Config, serve
from trio_chat.protocol import SHUTDOWN_TEXT


def shutdown(clients_count: int) -> Message:
    """The shutdown notice: like every system message it says how many are online."""
    return {"type": "system", "event": "shutdown", "text": SHUTDOWN_TEXT,
            "clients_count": clients_count}


async def start_stoppable(
    nursery: trio.Nursery, config: Config
) -> tuple[Bound, trio.Event, trio.Event]:
    """serve() with a stop event; ``done`` is set when serve() has returned."""
    stop, done = trio.Event(), trio.Event()

    async def run(task_status: trio.TaskStatus[Bound]=trio.TASK_STATUS_IGNORED) -> None:
        await serve(config, stop=stop, task_status=task_status)
        done.set()

    bound: Bound = await nursery.start(run)
    return bound, stop, done


async def test_stop_drains_queues_says_shutdown_last_and_closes_websockets_with_1001(
    nursery: trio.Nursery
) -> None:
    bound, stop, done = await start_stoppable(nursery, Config(tcp_port=0, ws_port=0, rate_limit=0))
    async with (
        await TcpClient.connect(bound.tcp_port) as reader,
        await TcpClient.connect(bound.tcp_port) as talker,
        ws_client(bound.ws_port) as conn,
    ):
        ws = WsClient(conn)
        await reader.join("Reader")
        await ws.join("Web")
        await talker.join("Talker")
        for i in range(200):
            await talker.send({"type": "chat", "text": f"m{i}"})
        for i in range(200):  # the server has queued all 200 for everyone
            assert (await talker.recv_until(type="chat"))["text"] == f"m{i}"
        got: list[Message] = []
        web: list[Message] = []
        codes: list[int] = []

        async def read_tcp() -> None:
            got.extend(await reader.recv_all())

        async def read_ws() -> None:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    web.append(await ws.recv())
            codes.append(close_reason(closed.value).code)

        stop.set()
        # The clients read to the end and answer the server's close, as real ones do
        # (one that does not is let go after goodbye_timeout).
        async with trio.open_nursery() as clients:
            clients.start_soon(read_tcp)
            clients.start_soon(talker.eof)
            clients.start_soon(read_ws)
            with trio.fail_after(10):
                await done.wait()  # serve() returned: everything drained and closed

        # Each client got everything queued, then the shutdown notice, then the end,
        # and no leave notices for the others.
        chats = [m["text"] for m in got if m["type"] == "chat"]
        assert chats == [f"m{i}" for i in range(200)]
        assert got[-1] == shutdown(3)
        assert not [m for m in got if m.get("event") == "leave"]

        assert codes == [1001]
        assert [m["text"] for m in web if m["type"] == "chat"] == chats
        assert web[-1] == shutdown(3)
        # The listeners are closed: nobody new gets in.
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", bound.tcp_port)


async def test_grace_period_bounds_the_wait_for_stuck_connections(nursery: trio.Nursery) -> None:
    config = Config(tcp_port=0, ws_port=0, shutdown_grace=0.2, handshake_timeout=60)
    bound, stop, done = await start_stoppable(nursery, config)
    # A WebSocket connection that never sends its handshake would hold the server 60 s.
    async with await TcpClient.connect(bound.ws_port) as stuck:
        start = trio.current_time()
        stop.set()
        with trio.fail_after(10):
            await done.wait()
        assert trio.current_time() - start >= 0.2
        assert await stuck.eof()


@pytest.mark.slow
async def test_sigterm_stops_gracefully_with_exit_status_0() -> None:
    async with server_process("--log-format", "json") as server:
        async with (
            await TcpClient.connect(server.tcp_port) as tcp,
            ws_client(server.ws_port) as conn,
        ):
            await tcp.join("Bob")
            ws = WsClient(conn)
            await ws.join("Ann")
            server.signal(signal.SIGTERM)
            assert (await tcp.recv_until(type="system", event="shutdown")) == shutdown(2)
            assert await tcp.eof()
            assert (await ws.recv_until(type="system", event="shutdown")) == shutdown(2)
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert close_reason(closed.value).code == 1001
            with trio.fail_after(10):
                assert await server.process.wait() == 0
        log = [json.loads(line) for line in await server.rest_of_log()]
        messages = [entry["message"] for entry in log]
        assert any(m.startswith("open-file limit") for m in messages)
        assert any(m.startswith("SIGTERM received") for m in messages)
        assert any(m.startswith("disconnect tcp") and "(shutdown)" in m for m in messages)
        # Lifecycle lines carry structured fields in JSON.
        assert sorted(e["user"] for e in log if e.get("event") == "join") == ["Ann", "Bob"]
        disconnects = {(e["transport"], e["reason"]) for e in log if e.get("event") == "disconnect"}
        assert disconnects == {("tcp", "shutdown"), ("ws", "shutdown")}
        assert messages[-1] == "trio-chat stopped"


@pytest.mark.slow
async def test_second_signal_stops_at_once_with_exit_status_1() -> None:
    async with server_process("--shutdown-grace", "60") as server:
        # A connection that never finishes its WebSocket handshake keeps the drain busy.
        async with await TcpClient.connect(server.ws_port) as stuck:
            server.signal(signal.SIGINT)
            await server.wait_log("SIGINT received")
            server.signal(signal.SIGTERM)
            with trio.fail_after(5):
                assert await server.process.wait() == 1
            assert await stuck.eof()
        assert "stopping at once" in " ".join(await server.rest_of_log())
