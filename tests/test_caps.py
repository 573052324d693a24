"""Connection caps: --max-clients and --max-per-ip refuse at once and disturb nobody."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from tests.support.memory import memory_tcp, memory_ws
from tests.support.tcp import TcpClient
from tests.support.ws import WsClient, close_reason, ws_client
from trio_chat import Config, serve
from trio_chat.protocol import SERVER_FULL
from trio_chat.server.limits import Gate
from trio_chat.server.rooms import Rooms
from trio_chat.server.session import Session


async def test_tcp_over_the_per_ip_cap_gets_server_full_and_a_slot_frees_on_close(
    nursery: trio.Nursery
) -> None:
    room, config = Rooms(), Config()
    gate: Gate[Session] = Gate(max_clients=10, max_per_ip=2)
    ann = memory_tcp(nursery, room, config, gate=gate)
    bob = memory_tcp(nursery, room, config, gate=gate)
    await ann.join("Ann")
    await bob.join("Bob")
    extra = memory_tcp(nursery, room, config, gate=gate)
    error = await extra.recv()
    assert error["type"] == "error" and error["code"] == SERVER_FULL
    assert "your address" in error["text"]
    assert await extra.eof()
    # The two inside never noticed.
    await bob.send({"type": "chat", "text": "still fine"})
    assert (await ann.recv_until(type="chat"))["text"] == "still fine"
    assert gate.total == 2 and len(gate.live) == 2
    # When one leaves its slot is free again.
    await ann.send({"type": "leave"})
    assert await ann.eof()
    await trio.testing.wait_all_tasks_blocked()
    assert gate.total == 1 and len(gate.live) == 1
    carl = memory_tcp(nursery, room, config, gate=gate)
    await carl.join("Carl")


async def test_tcp_over_max_clients_gets_server_full(nursery: trio.Nursery) -> None:
    room, config = Rooms(), Config()
    gate: Gate[Session] = Gate(max_clients=1, max_per_ip=0)
    ann = memory_tcp(nursery, room, config, gate=gate)
    await ann.join("Ann")
    extra = memory_tcp(nursery, room, config, gate=gate)
    error = await extra.recv()
    assert error["code"] == SERVER_FULL and "server full" in error["text"]
    assert await extra.eof()


async def test_websocket_over_a_cap_is_closed_with_1013(nursery: trio.Nursery) -> None:
    room, config = Rooms(), Config()
    gate: Gate[Session] = Gate(max_clients=1, max_per_ip=0)
    inside = memory_tcp(nursery, room, config, gate=gate)
    await inside.join("Inside")
    ws = await memory_ws(nursery, room, config, gate=gate)
    with pytest.raises(ConnectionClosed) as closed:
        await ws.get_message()
    assert close_reason(closed.value).code == 1013
    assert gate.total == 1


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_real_server_refuses_over_the_per_ip_cap(
    nursery: trio.Nursery, transport: str
) -> None:
    bound = await nursery.start(serve, Config(tcp_port=0, ws_port=0, max_per_ip=1))
    async with await TcpClient.connect(bound.tcp_port) as first:
        await first.join("First")
        if transport == "tcp":
            async with await TcpClient.connect(bound.tcp_port) as second:
                error = await second.recv()
                assert error["code"] == SERVER_FULL
                assert await second.eof()
        else:
            async with ws_client(bound.ws_port) as conn:
                with pytest.raises(ConnectionClosed) as closed:
                    await WsClient(conn).recv()
                assert close_reason(closed.value).code == 1013
        await first.send({"type": "ping"})
        await first.recv_until(type="pong")
