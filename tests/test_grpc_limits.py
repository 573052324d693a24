"""gRPC under the server's limits: a slow reader, TLS, caps and per-address limits,
flood control, the join deadline, shutdown, health and reflection."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import grpc
import pytest
import trio
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.admin import scrape
from tests.support.cluster import node, token_in_redis
from tests.support.config import TEST_CONFIG
from tests.support.grpcclient import Failed, grpc_client, made
from tests.support.redis import RedisServer
from tests.support.tcp import Message, TcpClient
from tests.support.tls import TlsFiles
from trio_chat import Bound, Config, serve
from trio_chat.transports.grpc import calls
from trio_chat.v1 import chat_pb2 as pb


def target(server: Bound) -> str:
    assert server.grpc_target is not None
    return server.grpc_target


GRPC_CONFIG = replace(TEST_CONFIG, grpc_port=0)


@pytest.fixture
def config() -> Config:
    return GRPC_CONFIG


_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_a_stream_that_stops_reading_is_cut_off(nursery: trio.Nursery) -> None:
    # No seat held for a resume (a slow consumer's is: tests/test_resume.py), so its
    # leave is announced at once.
    config = replace(GRPC_CONFIG, queue_size=16, send_timeout=1.0, resume_grace=0)
    server: Bound = await nursery.start(serve, config)
    async with grpc_client(target(server)) as client, \
            await TcpClient.connect(server.tcp_port) as bob:
        slow = await client.session()
        await slow.join("Slow")
        await slow.receive_until("history_end")
        await bob.join("Bob")
        # Slow reads no more; Bob talks until the server gives up on it (HTTP/2 flow
        # control fills up, then the queue or --send-timeout).
        text = "x" * 4000
        evicted = None
        for n in range(2000):
            await bob.send({"type": "chat", "text": f"{n} {text}"})
            while evicted is None:
                message = await bob.recv()
                if message.get("event") == "leave":
                    evicted = message
                elif message["type"] == "chat":
                    break
            if evicted is not None:
                break
        assert evicted is not None and evicted["name"] == "Slow"
        assert evicted["clients_count"] == 1
        # What it had buffered, then the status saying why.
        events = await slow.drain()
        assert all(e.WhichOneof("event") in ("chat", "system") for e in events)
        code, details = await slow.status()
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.startswith("slow_consumer: ")


async def test_tls(nursery: trio.Nursery, tls: TlsFiles) -> None:
    """--tls-cert makes the gRPC port speak TLS too; a client that trusts the CA chats,
    a plain-text one gets nowhere. The key may be in the certificate's file."""
    combined = tls.cert.with_name("combined.pem")
    combined.write_bytes(tls.cert.read_bytes() + tls.key.read_bytes())
    for config in (tls.server_config(GRPC_CONFIG),
                   replace(GRPC_CONFIG, tls_cert=str(combined))):
        server: Bound = await nursery.start(serve, config)
        assert server.tls
        trusted = grpc.ssl_channel_credentials(root_certificates=tls.ca_pem.read_bytes())
        async with grpc_client(target(server), trusted) as client:
            ann = await client.session()
            await ann.join("Ann")
            await ann.chat("over TLS")
            assert (await ann.receive_until("chat")).chat.text == "over TLS"
        async with grpc_client(target(server)) as plain:
            with pytest.raises(Failed) as failed:
                await plain.who()
            assert failed.value.code == grpc.StatusCode.UNAVAILABLE
        untrusted = grpc.ssl_channel_credentials()  # the system's CAs only
        async with grpc_client(target(server), untrusted) as stranger:
            with pytest.raises(Failed) as failed:
                await stranger.who()
            assert failed.value.code == grpc.StatusCode.UNAVAILABLE


async def test_streams_count_under_the_caps_with_every_connection(nursery: trio.Nursery) -> None:
    server: Bound = await nursery.start(serve, replace(GRPC_CONFIG, max_per_ip=2))
    async with grpc_client(target(server)) as client, \
            await TcpClient.connect(server.tcp_port) as bob:
        await bob.join("Bob")
        ann = await client.session()
        await ann.join("Ann")
        # A TCP connection and a Session stream: the address's two. A third is refused.

        async def session() -> None:
            await (await client.session()).receive()

        for call in (session, client.who):
            with pytest.raises(Failed) as failed:
                await call()
            assert failed.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert failed.value.details.startswith("server_full: ")
        await ann.send(pb.ClientEvent(leave=pb.LeaveRequest()))
        await ann.drain()
        await bob.recv_until(type="system", event="leave", name="Ann")
        assert list((await client.who()).users) == ["Bob"]


async def test_each_call_counts_toward_the_connection_rate(nursery: trio.Nursery) -> None:
    config = replace(GRPC_CONFIG, connect_rate=0.001, connect_burst=2)
    server: Bound = await nursery.start(serve, config)
    async with grpc_client(target(server)) as client:
        await client.who()
        await client.history()
        with pytest.raises(Failed) as failed:
            await client.who()
        assert failed.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert failed.value.details.startswith("rate_limited: ")


FLOOD = replace(GRPC_CONFIG, rate_limit=100, rate_burst=1, rate_ceiling=3)


async def test_flood_control_cuts_off_a_session(nursery: trio.Nursery) -> None:
    server: Bound = await nursery.start(serve, FLOOD)
    async with grpc_client(target(server)) as client:
        ann = await client.session()
        await ann.join("Ann")
        for n in range(20):
            await ann.chat(f"{n}")
        error = await ann.receive_until("error")
        assert error.error.code == "rate_limited"
        await ann.drain()
        code, details = await ann.status()
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.startswith("rate_limited: ")


async def test_flood_control_cuts_off_a_post(nursery: trio.Nursery) -> None:
    server: Bound = await nursery.start(serve, FLOOD)
    async with grpc_client(target(server)) as client, \
            await TcpClient.connect(server.tcp_port) as bob:
        await bob.join("Bob")
        with pytest.raises(Failed) as failed:
            await client.post(*[pb.PostRequest(user="Bot", text=f"{n}") for n in range(20)])
        assert failed.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert failed.value.details.startswith("rate_limited: ")
        assert "posted before it" in failed.value.details
        assert (await bob.recv_until(type="system", event="leave"))["name"] == "Bot"


async def test_a_stream_that_never_joins_is_closed(nursery: trio.Nursery) -> None:
    server: Bound = await nursery.start(serve, replace(GRPC_CONFIG, idle_timeout=0.5))
    async with grpc_client(target(server)) as client:
        idle = await client.session()
        await idle.send(pb.ClientEvent(who=pb.WhoRequest()))  # does not count as joining
        await idle.receive_until("users")
        assert (await idle.receive_until("error")).error.code == "idle_timeout"
        await idle.drain()
        code, details = await idle.status()
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert details.startswith("idle_timeout: ")


async def test_a_listener_has_no_join_deadline_and_counts_under_the_caps(
    nursery: trio.Nursery,
) -> None:
    """A stream that listens is a connection (``--max-per-ip``, the metrics' listening
    state) that never has to join: it outlives a stream opened after it that is closed
    for not joining."""
    config = replace(GRPC_CONFIG, idle_timeout=0.5, max_per_ip=3, admin_port=0)
    server: Bound = await nursery.start(serve, config)
    assert server.admin_port is not None
    async with grpc_client(target(server)) as client:
        listener = await client.session()
        await listener.send(pb.ClientEvent(listen=pb.ListenRequest()))
        await listener.send(pb.ClientEvent(ping=pb.PingRequest()))
        await listener.receive_until("pong")
        metrics = await scrape(server.admin_port)
        assert metrics.value("trio_chat_connections", transport="grpc", state="listening") == 1
        assert metrics.value("trio_chat_members") == 0
        idle = await client.session()  # its deadline is later than the listener's
        assert (await idle.receive_until("error")).error.code == "idle_timeout"
        await idle.drain()
        async with await TcpClient.connect(server.tcp_port) as bob:
            await bob.join("Bob")
            # The listener and Bob are two of the address's three; a fourth is refused.
            third = await client.session()
            await third.receive_until("hello")
            with pytest.raises(Failed) as failed:
                await client.who()
            assert failed.value.details.startswith("server_full: ")
            await bob.send({"type": "chat", "text": "still listening?"})
            assert (await listener.receive_until("chat")).chat.text == "still listening?"


async def test_a_listener_that_stops_reading_is_cut_off_and_nobody_is_told(
    nursery: trio.Nursery,
) -> None:
    config = replace(GRPC_CONFIG, queue_size=16, send_timeout=1.0, admin_port=0)
    server: Bound = await nursery.start(serve, config)
    assert server.admin_port is not None
    async with grpc_client(target(server)) as client, \
            await TcpClient.connect(server.tcp_port) as bob:
        slow = await client.session()
        await slow.send(pb.ClientEvent(listen=pb.ListenRequest()))
        await slow.send(pb.ClientEvent(ping=pb.PingRequest()))
        await slow.receive_until("pong")
        await bob.join("Bob")
        # The listener reads no more; Bob talks until the server gives up on it (seen
        # in the metrics: nobody is told).
        seen: list[Message] = []
        text = "x" * 4000
        for n in range(2000):
            await bob.send({"type": "chat", "text": f"{n} {text}"})
            seen.append(await bob.recv())
            if n % 16 == 15:
                metrics = await scrape(server.admin_port)
                if metrics.value("trio_chat_disconnects", reason="slow_consumer"):
                    break
        assert metrics.value("trio_chat_connections", transport="grpc", state="listening") == 0
        # What it had buffered, then the status saying why.
        events = await slow.drain()
        assert {e.WhichOneof("event") for e in events} <= {"hello", "pong", "system", "chat"}
        code, details = await slow.status()
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.startswith("slow_consumer: ")
        await bob.send({"type": "who"})
        seen.append(await bob.recv())
        assert {m["type"] for m in seen} == {"chat", "users"}  # no notice of any kind
        assert (seen[-1]["users"], seen[-1]["clients_count"]) == (["Bob"], 1)


async def test_shutdown_says_so_then_unavailable(nursery: trio.Nursery) -> None:
    stop = trio.Event()
    server: Bound = await nursery.start(partial(serve, GRPC_CONFIG, stop=stop))
    async with grpc_client(target(server)) as client:
        ann = await client.session()
        await ann.join("Ann")
        health = health_pb2_grpc.HealthStub(client.channel)
        watch = await client.run(made(lambda: health.Watch(
            health_pb2.HealthCheckRequest(service="trio_chat.v1.Chat"))))
        statuses = []
        while _SERVING not in statuses:
            statuses.append((await client.run(watch.read)).status)
        stop.set()
        notice = await ann.receive_until("system", event="shutdown")
        assert notice.system.text == "server shutting down"
        assert notice.system.clients_count == 1  # as every system event says
        await ann.drain()
        code, details = await ann.status()
        assert code == grpc.StatusCode.UNAVAILABLE
        assert details.startswith("shutdown: ")
        assert (await client.run(watch.read)).status == _NOT_SERVING


async def test_health_and_reflection(server: Bound) -> None:
    """What ``grpcurl -plaintext HOST:PORT list`` and ``describe`` ask, and a health
    check, answered."""
    async with grpc_client(target(server)) as client:
        health = health_pb2_grpc.HealthStub(client.channel)
        for service in ("", "trio_chat.v1.Chat"):
            request = health_pb2.HealthCheckRequest(service=service)
            watch = await client.run(made(partial(health.Watch, request)))
            # SERVING once every listener accepts (it may take a moment after start).
            while (await client.run(watch.read)).status != _SERVING:
                pass
            assert (await client.run(partial(health.Check, request))).status == _SERVING
        with pytest.raises(Failed) as failed:
            await client.run(lambda: health.Check(health_pb2.HealthCheckRequest(service="x")))
        assert failed.value.code == grpc.StatusCode.NOT_FOUND
        reflect = reflection_pb2_grpc.ServerReflectionStub(client.channel)

        async def ask(**request: str) -> reflection_pb2.ServerReflectionResponse:
            async def one() -> reflection_pb2.ServerReflectionResponse:
                call = reflect.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(**request)]))
                async for response in call:
                    return response
                raise AssertionError("no answer")
            return await client.run(one)

        listed = await ask(list_services="")
        names = {service.name for service in listed.list_services_response.service}
        assert {"trio_chat.v1.Chat", "grpc.health.v1.Health"} <= names
        described = await ask(file_containing_symbol="trio_chat.v1.Chat")
        (raw,) = described.file_descriptor_response.file_descriptor_proto
        descriptor = descriptor_pb2.FileDescriptorProto.FromString(raw)
        (chat,) = descriptor.service
        assert [(m.name, m.client_streaming, m.server_streaming) for m in chat.method] == [
            ("Who", False, False), ("History", False, True), ("Post", True, False),
            ("Session", True, True)]


async def test_cluster_mode_grpc_on_one_server_tcp_on_another(
    redis_server: RedisServer,
) -> None:
    """--redis: a Session on server A and a TCP client on server B share one room and
    its ids; Post's ids come from the Redis sequence; History reads the shared one."""
    config = replace(GRPC_CONFIG, redis=redis_server.url, presence_ttl=2.0)
    async with node(config) as (_, a), node(config) as (_, b), \
            grpc_client(target(a)) as client, \
            await TcpClient.connect(b.tcp_port) as bob:
        await bob.join("Bob")
        ann = await client.session()
        welcome = await ann.join("Ann")
        assert sorted(welcome.users) == ["Ann", "Bob"] and welcome.clients_count == 2
        # Names are claimed across servers.
        with pytest.raises(Failed) as failed:
            await client.post(pb.PostRequest(user="bob", text="not you"))
        assert failed.value.code == grpc.StatusCode.ALREADY_EXISTS
        await ann.chat("from gRPC on A")
        message = await bob.recv_until(type="chat", user="Ann")
        echo = await ann.receive_until("chat", user="Ann")
        assert echo.chat.id == message["id"]
        summary = await client.post(pb.PostRequest(user="Bot", text="posted on A"))
        posted = await bob.recv_until(type="chat", user="Bot")
        assert list(summary.ids) == [posted["id"]] and posted["id"] > message["id"]
        assert [m.text for m in await client.history()] == ["from gRPC on A", "posted on A"]


async def test_cluster_mode_a_grpc_seat_resumes_on_another_server(
    redis_server: RedisServer,
) -> None:
    """--redis: a Session stream lost on server A keeps its seat there; its token,
    brought back on a Session stream to server B, moves the seat, with no notice."""
    config = replace(GRPC_CONFIG, redis=redis_server.url, presence_ttl=2.0)
    async with node(config) as (_, a), node(config) as (_, b), \
            grpc_client(target(a)) as on_a, grpc_client(target(b)) as on_b, \
            await TcpClient.connect(b.tcp_port) as bob:
        await bob.join("Bob")
        ann = await on_a.session()
        token = (await ann.join("Ann")).resume
        seen = (await ann.receive_until("history_end")).history_end.last_id
        await bob.recv_until(type="system", event="join", name="Ann")
        await ann.cancel()  # lost: held on A, its token in Redis
        await token_in_redis(config, token)
        await bob.send({"type": "chat", "text": "while you were away"})
        await bob.recv_until(type="chat")
        again = await on_b.session()
        welcome = await again.join("Ann", resume=token, since=seen)
        assert sorted(welcome.users) == ["Ann", "Bob"] and welcome.clients_count == 2
        assert welcome.resume not in ("", token)
        replayed = await again.receive()
        assert replayed is not None and replayed.chat.text == "while you were away"
        await again.receive_until("history_end")
        await again.chat("back, on B")
        message = await bob.recv()  # no leave, no join before it
        assert (message["type"], message["text"]) == ("chat", "back, on B")


async def test_a_post_call_is_bounded(server: Bound, monkeypatch: pytest.MonkeyPatch) -> None:
    """One Post call takes at most MAX_POST messages (its summary holds an id each):
    the next one ends it, saying what went out."""
    monkeypatch.setattr(calls, "MAX_POST", 3)
    async with grpc_client(target(server)) as client:
        with pytest.raises(Failed) as failed:
            await client.post(*[pb.PostRequest(user="Bot", text=f"{n}") for n in range(5)])
        assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert failed.value.details.startswith("too_long: a Post call takes at most 3")
        assert "(3 posted before it" in failed.value.details
        assert [m.text for m in await client.history()] == ["0", "1", "2"]
