"""Dead peers: idle TCP connections, peers that stop reading, WebSockets that stop
answering pings, and TCP keepalive on accepted sockets."""

from __future__ import annotations

import socket
from contextlib import suppress

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from tests.support.frames import CLOSE, PING, PONG, TEXT, frame, server_frames, upgrade
from tests.support.memory import WrappedStream, memory_tcp, memory_ws
from tests.support.tcp import TcpClient
from tests.support.waits import VIRTUAL_WAIT
from trio_chat.config import Config
from trio_chat.protocol import IDLE_TIMEOUT
from trio_chat.server.rooms import Rooms
from trio_chat.transports.admission import Admission
from trio_chat.transports.net import KEEPALIVE_IDLE, set_keepalive
from trio_chat.transports.tcp import handle_tcp
from trio_chat.transports.ws import handle_ws


async def test_tcp_connection_that_never_joins_is_closed_after_the_idle_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = Config(idle_timeout=30)
    room = Rooms()
    lurker = memory_tcp(nursery, room, config)
    start = trio.current_time()
    await lurker.send_raw(b"/who\n")  # talking without joining does not count
    assert (await lurker.recv())["type"] == "users"
    error = await lurker.recv()
    assert error["type"] == "error" and error["code"] == IDLE_TIMEOUT
    assert await lurker.eof()
    assert trio.current_time() - start == pytest.approx(30)


async def test_joined_tcp_connection_may_stay_quiet(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = Config(idle_timeout=30)
    room = Rooms()
    member = memory_tcp(nursery, room, config)
    await member.join("Quiet")
    await trio.sleep(3600)
    await member.send({"type": "ping"})
    assert (await member.recv_until(type="pong")) == {"type": "pong"}


async def test_peer_that_stops_reading_is_cut_off_after_the_send_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A lockstep stream blocks every write until the peer reads: a full kernel buffer."""
    config = Config(send_timeout=10)
    room = Rooms()
    watcher = memory_tcp(nursery, room, config)
    await watcher.join("Watcher")
    client_end, server_end = trio.testing.lockstep_stream_pair()
    nursery.start_soon(handle_tcp, Admission(room, config), server_end)
    start = trio.current_time()
    await client_end.send_all(b'{"type":"join","user":"Stuck"}\n')  # then never reads
    await watcher.recv_until(type="system", event="join", name="Stuck")
    await watcher.send({"type": "chat", "text": "anyone?"})
    await watcher.recv_until(type="chat")
    leave = await watcher.recv_until(type="system", event="leave")
    assert leave["name"] == "Stuck"
    assert trio.current_time() - start == pytest.approx(10)
    # The room kept serving the watcher while the write hung.
    await watcher.send({"type": "ping"})
    await watcher.recv_until(type="pong")
    await client_end.aclose()


@pytest.fixture(params=["server pinger", "own keepalive"])
def pinger(request: pytest.FixtureRequest) -> bool:
    """Run the WebSocket tests with the server's one pinger task (as ``serve`` does),
    and with none (each connection keeps its own keepalive task)."""
    return bool(request.param == "server pinger")


def ws_admission(nursery: trio.Nursery, room: Rooms, config: Config, pinger: bool) -> Admission:
    admission = Admission(room, config)
    if pinger:
        nursery.start_soon(admission.pinger.run)
    return admission


async def test_websocket_that_stops_answering_pings_is_dropped(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, pinger: bool
) -> None:
    config = Config(ping_interval=20, ping_timeout=5)
    room = Rooms()
    admission = ws_admission(nursery, room, config, pinger)
    watcher = memory_tcp(nursery, room, config)
    await watcher.join("Watcher")
    assert admission.pinger.running is pinger
    # A hand-made WebSocket client that joins and then goes silent: it never pongs.
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(handle_ws, admission, server_end)
    start = trio.current_time()
    await upgrade(client_end)
    await client_end.send_all(frame(TEXT, b'{"type":"join","user":"Ghost"}'))
    await watcher.recv_until(type="system", event="join", name="Ghost")
    leave = await watcher.recv_until(type="system", event="leave")
    assert leave["name"] == "Ghost"
    assert trio.current_time() - start == pytest.approx(20 + 5)
    # The server closed the connection: what it sent ends with a close frame 4001.
    data = b""
    with trio.fail_after(VIRTUAL_WAIT):
        while chunk := await client_end.receive_some():
            data += chunk
    assert b"\x88" in data and (4001).to_bytes(2, "big") + b"ping timeout" in data
    await client_end.aclose()


async def test_websocket_pinged_after_each_pong_is_dropped_when_it_stops_answering(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, pinger: bool
) -> None:
    """Each ping comes ``ping_interval`` after the last pong: a peer that answers two
    by hand and then goes silent is dropped at the third's timeout."""
    config = Config(ping_interval=20, ping_timeout=5)
    room = Rooms()
    admission = ws_admission(nursery, room, config, pinger)
    watcher = memory_tcp(nursery, room, config)
    await watcher.join("Watcher")
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(handle_ws, admission, server_end)
    await upgrade(client_end)
    await client_end.send_all(frame(TEXT, b'{"type":"join","user":"Tired"}'))
    await watcher.recv_until(type="system", event="join", name="Tired")
    start = trio.current_time()
    pings: list[float] = []
    with trio.fail_after(VIRTUAL_WAIT):
        while len(pings) < 2:
            for opcode, payload in server_frames(bytes(await client_end.receive_some())):
                if opcode == PING:
                    pings.append(trio.current_time() - start)
                    await trio.sleep(2)  # the pong takes 2 s
                    await client_end.send_all(frame(PONG, payload))
    assert pings == [pytest.approx(20), pytest.approx(20 + 2 + 20)]
    leave = await watcher.recv_until(type="system", event="leave")
    assert leave["name"] == "Tired"
    assert trio.current_time() - start == pytest.approx(20 + 2 + 20 + 2 + 20 + 5)
    await client_end.aclose()


async def test_websocket_that_answers_pings_stays(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, pinger: bool
) -> None:
    config = Config(ping_interval=20, ping_timeout=5)
    room = Rooms()
    admission = ws_admission(nursery, room, config, pinger)
    watcher = memory_tcp(nursery, room, config)
    await watcher.join("Watcher")
    # trio-websocket answers pings itself...
    ws = await memory_ws(nursery, room, config, admission=admission)
    received: list[str | bytes] = []

    async def read_all() -> None:
        # ... while its messages are being read (its reader blocks on a full queue).
        with trio.move_on_after(VIRTUAL_WAIT), suppress(ConnectionClosed):
            while True:
                received.append(await ws.get_message())

    nursery.start_soon(read_all)
    await ws.send_message('{"type":"join","user":"Alive"}')
    await watcher.recv_until(type="system", event="join", name="Alive")
    await trio.sleep(20 * 10)
    await ws.send_message('{"type":"chat","text":"still here"}')
    msg = await watcher.recv_until(type="chat")
    assert msg["user"] == "Alive"
    assert not ws.closed
    await ws.aclose()
    assert ws.closed is not None and ws.closed.code == 1000


async def test_accepted_sockets_get_tcp_keepalive() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0]:
        port = listeners[0].socket.getsockname()[1]
        async with await trio.open_tcp_stream("127.0.0.1", port), await listeners[0].accept() as s:
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
            set_keepalive(s)
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            if hasattr(socket, "TCP_KEEPIDLE"):
                assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE


async def test_tcp_handler_turns_keepalive_on(nursery: trio.Nursery) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0]:
        port = listeners[0].socket.getsockname()[1]
        async with TcpClient(await trio.open_tcp_stream("127.0.0.1", port)) as client:
            accepted = await listeners[0].accept()
            nursery.start_soon(handle_tcp, Admission(Rooms(), Config()), accepted)
            await client.join("Kept")
            assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1


class StopsReading(WrappedStream):
    """The server's end of a connection whose peer stops reading once ``full`` is set:
    every write from then on waits for ever (a closed receive window)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        super().__init__(inner)
        self.full = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.full:
            await trio.sleep_forever()
        await self.inner.send_all(data)


async def test_websocket_that_closes_and_stops_reading_is_dropped(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, pinger: bool
) -> None:
    """trio-websocket answers a peer's close frame from its reader task before it ends
    the connection; a peer that never reads that answer must not hold its name (and
    its connection) for ever in a quiet room."""
    config = Config(ping_interval=20, ping_timeout=5)
    room = Rooms()
    admission = ws_admission(nursery, room, config, pinger)
    watcher = memory_tcp(nursery, room, config)
    await watcher.join("Watcher")
    client_end, server_end = trio.testing.memory_stream_pair()
    server = StopsReading(server_end)
    nursery.start_soon(handle_ws, admission, server)
    await upgrade(client_end)
    await client_end.send_all(frame(TEXT, b'{"type":"join","user":"Ghost"}'))
    await watcher.recv_until(type="system", event="join", name="Ghost")
    start = trio.current_time()
    server.full = True
    await client_end.send_all(frame(CLOSE, (1000).to_bytes(2, "big")))
    with trio.fail_after(120):
        leave = await watcher.recv_until(type="system", event="leave")
    assert leave["name"] == "Ghost"
    assert trio.current_time() - start <= config.ping_interval + config.ping_timeout + 1
    assert room.names == ["Watcher"]
    await client_end.aclose()
