"""The admin listener (``--admin-port``): ``/metrics`` scraped from a real server during
known traffic and parsed with prometheus_client's own parser, ``/healthz``,
``/readyz``, and its HTTP edges."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from click.testing import CliRunner

from tests.support.admin import NAMED, NAMED_REDIS, Scrape, get, scrape, scrape_until
from tests.support.cluster import chats, linked, node, unlinked
from tests.support.frames import PING, TEXT, UPGRADE_REQUEST, frame, text
from tests.support.http import exchange
from tests.support.memory import WrappedStream, memory_tcp
from tests.support.redis import RedisServer
from tests.support.tcp import TcpClient
from tests.support.waits import WAIT
from tests.support.ws import WsClient, ws_client
from trio_chat import Bound, Config, serve
from trio_chat.admin.collector import registry_for
from trio_chat.admin.health import watch_event_loop
from trio_chat.admin.http import MAX_CONNECTIONS
from trio_chat.cli import main
from trio_chat.history.sqlite import open_history
from trio_chat.server.app import Running, gate_for
from trio_chat.server.delivery import LocalDelivery
from trio_chat.server.limits import Gate
from trio_chat.server.metrics import Histogram
from trio_chat.server.rooms import Rooms
from trio_chat.server.session import Session
from trio_chat.transports.admission import Admission
from trio_chat.transports.tcp import TcpTransport
from trio_chat.transports.ws import handle_ws

DOCS = Path(__file__).parent.parent / "docs"
ADMIN = Config(tcp_port=0, ws_port=0, rate_limit=0, admin_port=0)

@pytest.fixture
def config() -> Config:
    return ADMIN


# ---------------------------------------------------------------- /metrics


async def test_a_scrape_during_known_traffic_counts_it_exactly(server: Bound) -> None:
    assert server.admin_port is not None
    before = await scrape(server.admin_port)
    for name, kind in NAMED.items():
        assert before.families[name].type == kind, name
    assert "trio_chat_redis_up" not in before.families  # no --redis
    assert before.value("trio_chat_rooms") == 1  # #lobby
    assert before.value("trio_chat_members") == 0
    async with (
        await TcpClient.connect(server.tcp_port) as alice,
        await TcpClient.connect(server.tcp_port) as bob,
        ws_client(server.ws_port) as conn,
    ):
        carol = WsClient(conn)
        await alice.join("alice")
        await bob.join("bob")
        await carol.join("carol")
        for n in range(3):
            await alice.send({"type": "chat", "text": f"m{n}"})
        for client in (alice, bob, carol):
            assert [(await client.recv_until(type="chat"))["text"] for _ in range(3)] == [
                "m0", "m1", "m2"
            ]
        await bob.send_raw(b"{not json\n")
        assert (await bob.recv())["code"] == "bad_json"

        during = await scrape(server.admin_port)
        assert during.value("trio_chat_connections", transport="tcp", state="joined") == 2
        assert during.value("trio_chat_connections", transport="ws", state="joined") == 1
        assert during.value("trio_chat_connections", transport="tcp", state="listening") == 0
        assert during.value("trio_chat_connections_accepted", transport="tcp") == 2
        assert during.value("trio_chat_members") == 3
        assert during.value("trio_chat_cluster_members") == 3
        assert during.value("trio_chat_messages_received", transport="tcp") == 3
        assert during.value("trio_chat_messages_received", transport="ws") == 0
        assert during.value("trio_chat_messages_broadcast", type="chat") == 3
        assert during.value("trio_chat_messages_broadcast", type="system") == 3  # joins
        # Join notices to 1, 2, 3 members, then 3 chats to 3.
        assert during.value("trio_chat_deliveries") == 1 + 2 + 3 + 3 * 3
        # Each got welcome, history_end, the joins since its own, the chats; bob his error.
        assert during.value("trio_chat_messages_sent", transport="tcp") == (2 + 3 + 3) + (
            2 + 2 + 3 + 1
        )
        assert during.value("trio_chat_messages_sent", transport="ws") == 2 + 1 + 3
        assert during.value("trio_chat_sent_bytes", transport="tcp") > 16 * 50  # 16 lines
        assert during.value("trio_chat_errors", code="bad_json") == 1
        assert during.value("trio_chat_errors", code="rate_limited") == 0
        assert during.value("trio_chat_queue_depth_high_water") >= 1
        assert 0 <= during.value("trio_chat_history_pending") <= 3
        # The writer commits within its 20 ms interval.
        committed = await scrape_until(server.admin_port, "trio_chat_history_pending", 0)
        assert committed.value("trio_chat_history_commit_seconds_count") >= 1
        assert during.value("trio_chat_replay_bytes_in_flight") == 0
        assert during.value("trio_chat_ready") == 1

        await alice.send({"type": "leave"})
        assert await alice.eof()
        await bob.recv_until(type="system", event="leave", name="alice")
    # Bob and carol hang up: counted once their sessions end.
    after = await scrape_until(server.admin_port, "trio_chat_members", 0)
    assert after.value("trio_chat_disconnects", reason="leave") == 1
    assert after.value("trio_chat_disconnects", reason="closed by peer") == 2
    assert after.value("trio_chat_disconnects", reason="slow_consumer") == 0
    # What the closed connections did is kept.
    assert after.value("trio_chat_messages_received", transport="tcp") == 3
    assert after.value("trio_chat_messages_sent", transport="ws") >= 2 + 1 + 3
    assert after.value("trio_chat_connections", transport="tcp", state="joined") == 0
    assert after.value("process_open_fds") > 0
    assert after.value("process_resident_memory_bytes") > 1 << 20


async def test_rooms_and_direct_messages_are_counted(nursery: trio.Nursery) -> None:
    """Rooms on the server, occupied ones, memberships, #lobby's and the largest
    rooms' members by label (a bounded set), direct messages, history bytes."""
    config = replace(ADMIN, room_create_rate=0)
    server: Bound = await nursery.start(serve, config)
    assert server.admin_port is not None
    async with (
        await TcpClient.connect(server.tcp_port) as ann,
        await TcpClient.connect(server.tcp_port) as bob,
    ):
        await ann.join("ann")
        await bob.join("bob")
        for name in ("#big", "#small", "#empty"):
            await ann.send({"type": "join", "room": name})
        await bob.send({"type": "join", "room": "#big"})
        await ann.send({"type": "part", "room": "#empty"})
        await ann.recv_until(type="system", event="leave", room="#empty")
        await bob.recv_until(type="system", event="join", room="#big", name="bob")
        await ann.send({"type": "msg", "to": "bob", "text": "psst"})
        await ann.send({"type": "chat", "room": "#big", "text": "stored"})
        await bob.recv_until(type="chat", text="stored")
        metrics = await scrape_until(server.admin_port, "trio_chat_history_pending", 0)
        assert metrics.value("trio_chat_rooms") == 4
        assert metrics.value("trio_chat_rooms_occupied") == 3
        assert metrics.value("trio_chat_members") == 2
        assert metrics.value("trio_chat_room_memberships") == 2 + 2 + 1
        assert metrics.value("trio_chat_room_members", room="#lobby") == 2
        assert metrics.value("trio_chat_room_members", room="#big") == 2
        assert metrics.value("trio_chat_room_members", room="#small") == 1
        assert metrics.value("trio_chat_direct_messages") == 1
        assert metrics.value("trio_chat_history_memory_bytes") > len("stored")
        assert metrics.value("trio_chat_history_stored_bytes") >= 4096  # pages in use
        labelled = [s for s in metrics.families["trio_chat_room_members"].samples]
        assert {s.labels["room"] for s in labelled} == {"#lobby", "#big", "#small"}


async def test_the_event_loop_lag_is_how_late_the_probe_woke(
    mock_clock: trio.testing.MockClock,  # time moves only when told: the loop "stalls"
) -> None:
    lag = Histogram()
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_event_loop, lag, 1.0)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(1.5)  # a wake-up due at 1.0 happens at 1.5
        await trio.testing.wait_all_tasks_blocked()
        assert (lag.count, lag.sum) == (1, 0.5)
        mock_clock.jump(1.0)  # on time
        await trio.testing.wait_all_tasks_blocked()
        assert (lag.count, lag.sum) == (2, 0.5)
        nursery.cancel_scope.cancel()
    assert lag.counts[0] == 1 and lag.counts[lag.bounds.index(0.5)] == 1


@pytest.mark.parametrize("config", [replace(ADMIN, rate_limit=2, rate_burst=1)])
async def test_flood_control_delays_are_counted(server: Bound) -> None:
    assert server.admin_port is not None
    async with await TcpClient.connect(server.tcp_port) as alice:
        await alice.join("alice")
        await alice.send_raw(b"one\ntwo\nthree\n")
        for text in ("one", "two", "three"):
            await alice.recv_until(type="chat", text=text)
    got = await scrape(server.admin_port)
    assert got.value("trio_chat_rate_limit_delays") >= 1
    assert got.value("trio_chat_rate_limit_delay_seconds") > 0


@pytest.mark.parametrize("config", [replace(ADMIN, queue_size=4, send_timeout=30)])
async def test_a_slow_consumer_is_counted_by_reason_and_queue_depth(server: Bound) -> None:
    assert server.admin_port is not None
    stuck = await trio.open_tcp_stream("127.0.0.1", server.tcp_port)
    async with stuck, await TcpClient.connect(server.tcp_port) as alice:
        await stuck.send_all(b'{"type":"join","user":"stuck"}\n')
        await alice.join("alice")
        # stuck never reads: its writes fill the socket buffers, then its queue of 4.
        text = "x" * 4000
        with trio.fail_after(WAIT):
            while True:
                await alice.send({"type": "chat", "text": text})
                msg = await alice.recv_until(type="chat")
                del msg
                got = await scrape(server.admin_port)
                if got.value("trio_chat_disconnects", reason="slow_consumer"):
                    break
    assert got.value("trio_chat_queue_depth_high_water") == 4
    assert got.value("trio_chat_disconnects", reason="slow_consumer") == 1


async def test_replay_bytes_in_flight_while_a_joiner_does_not_read(tmp_path: Any) -> None:
    """A replay being written is counted until the write is done."""
    config = replace(ADMIN, db=str(tmp_path / "h.db"), history_replay=50)
    async with open_history(config) as history, trio.open_nursery() as nursery:
        room = Rooms(LocalDelivery(history))
        for n in range(20):
            room.delivery.publish(room.lobby, "ann", f"message {n}", "T")
        gate = Gate[Session](0, 0)
        running = Running(config, room, gate, Bound("127.0.0.1", 1, 2), accepting=True)
        registry = registry_for(running)
        client, server_end = trio.testing.memory_stream_pair()
        held = trio.Event()

        class Held(WrappedStream):
            async def send_all(self, data: bytes | bytearray | memoryview) -> None:
                if b"history" in data:
                    await held.wait()
                await self.inner.send_all(data)

        session = Session(room, config, TcpTransport(Held(server_end), config, "memory"))
        gate.live.add(session)
        nursery.start_soon(session.run)
        reader = TcpClient(client)
        await reader.send({"type": "join", "user": "bob", "since": 0})
        await reader.recv_until(type="welcome")
        with trio.fail_after(WAIT):
            while not room.metrics.replay_bytes_in_flight:
                await trio.lowlevel.checkpoint()
        got = Scrape(generate(registry))
        in_flight = got.value("trio_chat_replay_bytes_in_flight")
        assert in_flight > 20 * len(b'{"type":"chat","id":1,"user":"ann","text":"message 0"}')
        held.set()
        await reader.recv_until(type="history_end")
        assert Scrape(generate(registry)).value("trio_chat_replay_bytes_in_flight") == 0
        assert Scrape(generate(registry)).value(
            "trio_chat_connections", transport="tcp", state="joined"
        ) == 1
        nursery.cancel_scope.cancel()


async def test_what_issue_13_refuses_is_counted_by_its_own_reason(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A connection refused for its address's rate is ``connect_rate`` (not the flood
    cutoffs' ``rate_limited``); a WebSocket protocol violation is ``protocol_error``,
    without its detail (that is for the log: labels stay a fixed set); pings past the
    limit are delays, and past the ceiling a ``rate_limited`` cutoff."""
    config = replace(ADMIN, rate_limit=5, rate_burst=2, rate_ceiling=5, connect_rate=1,
                     connect_burst=3)
    room = Rooms()
    gate = gate_for(config)
    running = Running(config, room, gate, Bound("127.0.0.1", 1, 2), accepting=True)
    registry = registry_for(running)

    def scraped() -> Scrape:
        return Scrape(generate(registry))

    watcher = memory_tcp(nursery, room, config, gate=gate)
    await watcher.join("watcher")
    # A WebSocket that will ping too fast, and one that breaks the framing rules.
    pinger, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(handle_ws, Admission(room, config, gate), server_end)
    await pinger.send_all(UPGRADE_REQUEST + text(json.dumps({"type": "join", "user": "pinger"})))
    await watcher.recv_until(type="system", event="join", name="pinger")
    bad, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(handle_ws, Admission(room, config, gate), server_end)
    await bad.send_all(UPGRADE_REQUEST + frame(TEXT, b"{}", mask=None))
    # The fourth connection within a second is one too many for the address.
    refused = memory_tcp(nursery, room, config, gate=gate)
    assert (await refused.recv())["code"] == "rate_limited"
    assert await refused.eof()

    # The pinger: the join took a token, one ping is on time, five are held back 0.2 s
    # apart, the next one is refused.
    await pinger.send_all(frame(PING, b"x") * 100)
    await watcher.recv_until(type="system", event="leave", name="pinger")
    for stream in (pinger, bad):
        while await stream.receive_some():  # up to the close frame and the end
            pass
        await stream.aclose()
    await trio.testing.wait_all_tasks_blocked()  # their handlers have finished (and counted)

    got = scraped()
    assert got.value("trio_chat_rate_limit_delays") == 5
    assert got.value("trio_chat_rate_limit_delay_seconds") == pytest.approx(1.0)
    assert got.value("trio_chat_errors", code="rate_limited") == 1  # the refusal is not a session's
    assert got.value("trio_chat_disconnects", reason="rate_limited") == 1
    assert got.value("trio_chat_disconnects", reason="connect_rate") == 1
    assert got.value("trio_chat_disconnects", reason="protocol_error") == 1
    reasons = {sample.labels["reason"] for sample in got.families["trio_chat_disconnects"].samples}
    assert not [reason for reason in reasons if ":" in reason], reasons
    assert got.value("trio_chat_connections_accepted", transport="tcp") == 2
    assert got.value("trio_chat_connections_accepted", transport="ws") == 2


def generate(registry: Any) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


# ---------------------------------------------------------------- /healthz, /readyz


async def test_healthz_and_readyz_answer_json(server: Bound) -> None:
    assert server.admin_port is not None
    assert server.admin_url == f"http://127.0.0.1:{server.admin_port}/"
    status, headers, body = await get(server.admin_port, "/healthz")
    assert (status, headers["content-type"], body) == (200, "application/json",
                                                       b'{"status":"ok"}\n')
    status, _, body = await get(server.admin_port, "/readyz")
    assert (status, body) == (200, b'{"status":"ready"}\n')


async def test_readyz_is_503_while_the_server_drains(nursery: trio.Nursery) -> None:
    stop = trio.Event()
    config = replace(ADMIN, shutdown_grace=60, goodbye_timeout=60)
    bound: Bound = await nursery.start(lambda task_status: serve(
        config, stop=stop, task_status=task_status))
    assert bound.admin_port is not None
    # A client that never hangs up keeps the drain going (the server lingers for its FIN).
    async with await TcpClient.connect(bound.tcp_port) as idle:
        await idle.join("idle")
        stop.set()
        await idle.recv_until(type="system", event="shutdown")
        status, _, body = await get(bound.admin_port, "/readyz")
        assert (status, body) == (503, b'{"status":"not ready","reasons":["shutting down"]}\n')
        status, _, _ = await get(bound.admin_port, "/healthz")
        assert status == 200


# ---------------------------------------------------------------- HTTP edges


async def test_other_paths_methods_hosts_and_heads(server: Bound) -> None:
    port = server.admin_port
    assert port is not None
    status, _, body = await get(port, "/")
    assert status == 404 and b"/metrics, /healthz, /readyz" in body
    status, headers, _ = await exchange(
        port, b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )
    assert (status, headers["allow"]) == (405, "GET, HEAD")
    status, headers, body = await exchange(
        port, b"HEAD /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    assert status == 200 and body == b"" and int(headers["content-length"]) > 1000
    # DNS rebinding: a page on another name that resolves here gets nothing.
    status, _, body = await get(port, "/metrics", host="rebind.attacker.example")
    assert status == 421 and b"trio_chat" not in body
    status, _, _ = await get(port, "/readyz", host=f"localhost:{port}")
    assert status == 200
    huge = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n"
    status, _, _ = await exchange(port, huge)
    assert status == 431


async def test_off_unless_asked_and_never_on_the_chat_ports() -> None:
    async with trio.open_nursery() as nursery:
        bound: Bound = await nursery.start(serve, replace(ADMIN, admin_port=None))
        assert bound.admin_port is None and bound.admin_url is None
        status, _, _ = await get(bound.ws_port, "/metrics")
        assert status == 404
        nursery.cancel_scope.cancel()


def test_the_server_without_an_admin_port_does_not_import_prometheus_client() -> None:
    code = ("import sys, trio_chat.cli, trio_chat.server.app; "
            "print('prometheus_client' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- with --redis


async def test_readyz_follows_redis_and_the_cluster_metrics_move(
    redis_server: RedisServer,
) -> None:
    """/readyz is 503 while Redis is down and 200 once relinked; the Redis metrics and
    the publish-to-delivery lag move with the traffic."""
    config = replace(ADMIN, redis=redis_server.url, presence_ttl=2.0)
    async with node(config) as (cluster, bound), await TcpClient.connect(bound.tcp_port) as ann:
        port = bound.admin_port
        assert port is not None
        await ann.join("ann")
        for n in range(4):
            await ann.send({"type": "chat", "text": f"m{n}"})
        await chats(ann, 4)
        got = await scrape(port)
        for name, kind in {**NAMED, **NAMED_REDIS}.items():
            assert got.families[name].type == kind, name
        assert got.value("trio_chat_redis_up") == 1
        assert got.value("trio_chat_redis_link_state", state="up") == 1
        assert got.value("trio_chat_redis_links") == 1
        assert got.value("trio_chat_publish_lag_seconds_count") == 4
        assert got.value("trio_chat_messages_broadcast", type="chat") == 4
        assert got.value("trio_chat_history_commit_seconds_count") >= 1  # publish scripts
        assert (await get(port, "/readyz"))[0] == 200

        await trio.to_thread.run_sync(redis_server.stop)
        await unlinked(cluster)
        status, _, body = await get(port, "/readyz")
        assert status == 503
        assert json.loads(body) == {"status": "not ready", "reasons": [
            "Redis is unreachable (delivering on this server only)"]}
        down = await scrape(port)
        assert down.value("trio_chat_redis_up") == 0
        assert down.value("trio_chat_redis_link_state", state="down") == 1
        assert down.value("trio_chat_ready") == 0

        await trio.to_thread.run_sync(redis_server.start)
        await linked(cluster)
        assert (await get(port, "/readyz"))[0] == 200
        back = await scrape(port)
        assert back.value("trio_chat_redis_links") == 2
        assert back.value("trio_chat_redis_resyncs", cause="wiped") == 1  # came back empty

        # The dashboard asks only for what a server exports.
        dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
        exported = {line.split("{")[0].split(" ")[0] for line in back.text.splitlines()
                    if line and not line.startswith("#")}
        asked = {name for panel in dashboard["panels"] for target in panel.get("targets", [])
                 for name in re.findall(r"\b(?:trio_chat|process)_\w+", target["expr"])}
        assert asked and asked <= exported, asked - exported


async def test_admin_connections_are_capped_and_bounded_in_time(nursery: trio.Nursery) -> None:
    config = replace(ADMIN, handshake_timeout=2)
    bound: Bound = await nursery.start(serve, config)
    port = bound.admin_port
    assert port is not None
    idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(MAX_CONNECTIONS)]
    try:
        # Over the cap: closed at once, unanswered.
        async with await trio.open_tcp_stream("127.0.0.1", port) as extra:
            await extra.send_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            with trio.fail_after(WAIT):
                assert await extra.receive_some(1024) == b""
        # The idle ones (a slowloris) are dropped after --handshake-timeout; then a
        # probe gets through again.
        with trio.fail_after(WAIT):
            assert await idle[0].receive_some(1024) == b""
        status, _, _ = await get(port, "/healthz")
        assert status == 200
    finally:
        for stream in idle:
            await stream.aclose()


def test_redis_wait_needs_redis() -> None:
    result = CliRunner().invoke(main, ["serve", "--redis-wait", "1"])
    assert result.exit_code == 2 and "--redis-wait needs --redis" in result.output
