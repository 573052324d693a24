"""Per-address limits (issue 13): ``--connect-rate``/``--connect-burst`` refuse an address
that opens connections too fast (``rate_limited``; WebSocket close 4029), and a new
connection starts with the flood state its address's last connections left, so
reconnecting is no way around flood control; connections open at once keep separate
buckets (people behind one NAT do not slow each other)."""

from __future__ import annotations

import json
from contextlib import suppress

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from tests.support.memory import memory_tcp, memory_ws
from tests.support.tcp import TcpClient
from tests.support.ws import close_reason
from trio_chat import Config, serve
from trio_chat.protocol import RATE_LIMITED, ProtocolError
from trio_chat.server.addresses import (
    ConnectThrottle,
    FloodMemory,
    Recent,
    address_key,
)
from trio_chat.server.app import gate_for
from trio_chat.server.limits import TokenBucket
from trio_chat.server.rooms import Rooms
from trio_chat.transports.admission import Admission


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- sans I/O


def test_connect_throttle_allows_a_burst_then_the_rate() -> None:
    clock = FakeClock()
    throttle = ConnectThrottle(rate=2, burst=5, clock=clock)
    assert [throttle.admit("10.0.0.1") for _ in range(7)] == [True] * 5 + [False] * 2
    assert throttle.refused("10.0.0.1") == 2
    assert throttle.admit("10.0.0.2")  # another address has its own allowance
    clock.now += 0.5  # one connection's worth
    assert [throttle.admit("10.0.0.1") for _ in range(2)] == [True, False]
    assert throttle.refused("10.0.0.1") == 1  # a refusal streak restarts after an admit
    clock.now += 2.5  # full again: the record is forgotten
    assert [throttle.admit("10.0.0.1") for _ in range(6)] == [True] * 5 + [False]


def test_refused_attempts_cost_nothing_and_zero_turns_it_off() -> None:
    clock = FakeClock()
    throttle = ConnectThrottle(rate=1, burst=1, clock=clock)
    assert throttle.admit("h")
    for _ in range(100):  # hammering does not dig a hole
        assert not throttle.admit("h")
        clock.now += 0.001
    clock.now += 1.0
    assert throttle.admit("h")
    off = ConnectThrottle(rate=0, burst=1, clock=clock)
    assert all(off.admit("h") for _ in range(1000))


def test_addresses_count_per_ipv4_address_and_per_ipv6_64() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("fe80::1%eth0") == address_key("fe80::2")
    assert address_key("memory") == "memory"
    clock = FakeClock()
    throttle = ConnectThrottle(rate=1, burst=2, clock=clock)
    assert throttle.admit("2001:db8::1") and throttle.admit("2001:db8::2")
    assert not throttle.admit("2001:db8::ffff:3")  # the same /64


def test_what_is_remembered_is_bounded_in_count_and_time() -> None:
    recent: Recent[int] = Recent(horizon=10, size=3)
    for i in range(5):
        recent.put(f"a{i}", i, now=100 + i)
    assert len(recent) == 3 and recent.get("a0", 104) is None and recent.get("a4", 104)
    assert recent.get("a2", 112) is None  # past its horizon
    recent.put("b", 0, now=200)  # writing prunes what is past the horizon
    assert len(recent) == 1
    clock = FakeClock()
    throttle = ConnectThrottle(rate=1, burst=1, clock=clock, size=100)
    for i in range(10_000):
        throttle.admit(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(throttle) <= 100


def test_a_reconnect_starts_where_the_last_connection_left_off() -> None:
    clock = FakeClock()
    memory = FloodMemory(rate=5, burst=10, ceiling=50, clock=clock)
    first = memory.bucket("10.0.0.1")
    for _ in range(30):
        first.take()  # 10 free, 20 delayed: 20 tokens owed, 20 held
    memory.left("10.0.0.1", first)
    second = memory.bucket("10.0.0.1")
    assert second.level() == pytest.approx(-20)
    assert second.take() == pytest.approx(21 / 5)  # not a fresh burst
    assert memory.bucket("10.0.0.2").take() == 0.0  # other addresses are not touched
    clock.now += 31 / 5  # the debt drains at the rate: then it is forgotten
    assert memory.bucket("10.0.0.1").take() == 0.0 and len(memory) == 0


def test_the_count_of_delayed_messages_carries_over_too() -> None:
    clock = FakeClock()
    memory = FloodMemory(rate=5, burst=1, ceiling=3, clock=clock)
    first = memory.bucket("h")
    first.take()
    for _ in range(3):
        first.take()  # delayed: 3 in a row, one short of the ceiling
    memory.left("h", first)
    with pytest.raises(ProtocolError) as caught:
        memory.bucket("h").take()  # the 4th in a row, on a new connection
    assert caught.value.code == RATE_LIMITED


def test_connections_that_find_their_address_owing_share_its_bucket_until_it_is_paid() -> None:
    """However many reconnect at once, they take from one bucket while the address
    owes: together one connection's rate. Once it is paid, each has its own."""
    clock = FakeClock()
    memory = FloodMemory(rate=5, burst=10, ceiling=50, clock=clock)
    flooder = memory.bucket("h")
    for _ in range(15):
        flooder.take()
    memory.left("h", flooder)  # owes 15: level -5
    again = [memory.bucket("h") for _ in range(20)]
    delays = [bucket.take() for bucket in again]
    assert delays == pytest.approx([(6 + i) / 5 for i in range(20)])  # one after another
    clock.now += (10 + 25) / 5 + 0.5  # paid (15 + 20 owed, from -25 up to 10)
    assert [bucket.take() for bucket in again] == [0.0] * 20  # each on its own now
    assert memory.bucket("h").take() == 0.0


def test_concurrent_fresh_connections_keep_their_own_buckets_and_their_debts_add_up() -> None:
    clock = FakeClock()
    memory = FloodMemory(rate=5, burst=10, ceiling=50, clock=clock)
    a, b = memory.bucket("nat"), memory.bucket("nat")
    for _ in range(10):
        assert a.take() == 0.0  # a's burst does not touch b's
    assert b.take() == 0.0
    memory.left("nat", a)
    memory.left("nat", b)
    assert memory.bucket("nat").level() == pytest.approx(10 - 11)
    # Someone who stayed within the limit leaves nothing behind.
    calm = memory.bucket("calm")
    for _ in range(20):
        calm.take()
        clock.now += 1
    memory.left("calm", calm)
    assert len(memory) == 1


def test_a_message_refused_past_the_ceiling_costs_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=5, burst=1, ceiling=2, clock=clock)
    bucket.take(), bucket.take(), bucket.take()
    level = bucket.level()
    for _ in range(10):
        with pytest.raises(ProtocolError):
            bucket.take()
    assert bucket.level() == level and bucket.held == 3


def test_the_debt_an_address_owes_is_capped() -> None:
    clock = FakeClock()
    memory = FloodMemory(rate=5, burst=10, ceiling=50, clock=clock)
    for _ in range(10):
        bucket = memory.bucket("h")
        for _ in range(40):
            with suppress(ProtocolError):
                bucket.take()
        memory.left("h", bucket)
    assert memory.bucket("h").level() == pytest.approx(-50)  # burst + ceiling owed


# ---------------------------------------------------------------- live


def address(config: Config) -> Admission:
    """One server's room and gate, as ``serve`` builds them, for memory-stream clients
    (which all come from one address, "memory")."""
    return Admission(Rooms(), config, gate_for(config))


def connect(nursery: trio.Nursery, admission: Admission) -> TcpClient:
    """A TCP client of that server, on a memory stream."""
    return memory_tcp(nursery, admission.rooms, admission.config, gate=admission.gate)


async def test_tcp_over_the_connect_rate_is_refused_with_rate_limited(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    admission = address(Config(connect_rate=1, connect_burst=3))
    clients = [connect(nursery, admission) for _ in range(3)]
    for i, client in enumerate(clients):
        await client.join(f"c{i}")
    extra = connect(nursery, admission)
    error = await extra.recv()
    assert error["type"] == "error" and error["code"] == RATE_LIMITED
    assert "connections" in error["text"]
    assert await extra.eof()
    await trio.sleep(1)
    again = connect(nursery, admission)
    await again.join("again")  # one more a second


async def test_websocket_over_the_connect_rate_is_closed_with_4029(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    admission = address(Config(connect_rate=1, connect_burst=1))
    await connect(nursery, admission).join("First")
    ws = await memory_ws(nursery, admission.rooms, admission.config, gate=admission.gate)
    with pytest.raises(ConnectionClosed) as closed:
        await ws.get_message()
    assert close_reason(closed.value).code == 4029
    assert close_reason(closed.value).reason == "too many connections"


async def test_a_storm_of_refusals_is_logged_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    admission = address(Config(connect_rate=1, connect_burst=1))
    caplog.set_level("INFO", logger="trio_chat")
    await connect(nursery, admission).join("First")
    for _ in range(20):
        refused = connect(nursery, admission)
        assert (await refused.recv())["code"] == RATE_LIMITED
        assert await refused.eof()
    refusals = [r for r in caplog.records if r.getMessage().startswith("refuse tcp")]
    assert len(refusals) == 1 and "too many new connections" in refusals[0].getMessage()


@pytest.mark.parametrize(
    "connect_rate, pause",
    [(2.0, 0.25), (0.0, 0.25), (2.0, 41.0)],
    ids=["connect-rate 2", "connect-rate off", "waves once the debt is paid"],
)
async def test_reconnecting_does_not_get_around_flood_control(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    connect_rate: float,
    pause: float,
) -> None:
    """The issue's attack: 20 sockets each connecting, sending the 10-message burst
    seed-style and leaving, over and over (before: 981 messages a second). The room
    gets a first wave of fresh connections, then at most twice --rate-limit a second
    on average, as documented."""
    rate, burst, seconds = 5.0, 10, 90
    config = Config(rate_limit=rate, rate_burst=burst, rate_ceiling=50, max_per_ip=100,
                    connect_rate=connect_rate, connect_burst=20)
    admission = address(config)
    watcher = connect(nursery, admission)
    await watcher.join("Watcher")
    end = trio.current_time() + seconds
    sent = 0

    async def cycle(index: int) -> None:
        nonlocal sent
        rounds = 0
        while trio.current_time() < end:
            rounds += 1
            name = f"Seed{index}x{rounds}"
            flood = b"".join(
                json.dumps({"type": "chat", "user": name, "text": f"m{i}"}).encode() + b"\n"
                for i in range(burst)
            )
            client = connect(nursery, admission)
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await client.send_raw(flood)
                sent += burst
                # Leave once the server has acted on all of it (or cut us off).
                await client.send_eof()
                await client.eof()
            await client.aclose()
            await trio.sleep(pause)

    arrivals: list[float] = []

    async def watch() -> None:
        while True:
            await watcher.recv_until(type="chat")
            arrivals.append(trio.current_time())

    nursery.start_soon(watch)
    async with trio.open_nursery() as sockets:
        for index in range(20):
            sockets.start_soon(cycle, index)
    await trio.sleep(60)  # what the last sessions still deliver
    start = arrivals[0]
    first_wave = [t for t in arrivals if t == start]
    after = [t for t in arrivals if start < t <= start + seconds]
    print(f"{connect_rate=:g} {pause=:g}: {sent} sent; first wave {len(first_wave)}, then "
          f"{len(after)} in {seconds} s ({len(after) / seconds:.1f}/s)")
    assert len(first_wave) <= 20 * burst
    assert len(after) <= 2 * rate * seconds


async def test_people_behind_one_address_do_not_slow_each_other(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Connections open at once from one address (a NAT) each have their own burst and
    rate, as long as the address owes nothing."""
    config = Config(rate_limit=5, rate_burst=10, rate_ceiling=50)
    admission = address(config)
    people = [connect(nursery, admission) for _ in range(5)]
    for i, person in enumerate(people):
        await person.join(f"P{i}")
    start = trio.current_time()
    for i, person in enumerate(people):
        await person.send_raw(b"".join(b"p%d m%d\n" % (i, n) for n in range(9)))
    for _ in range(5 * 9):
        await people[0].recv_until(type="chat")
    assert trio.current_time() == start  # nobody waited


def test_the_options_and_their_environment_variables() -> None:
    from click.testing import CliRunner

    from trio_chat.cli import serve as serve_command

    params = serve_command.make_context("serve", []).params
    assert (params["connect_rate"], params["connect_burst"]) == (2.0, 20)
    params = serve_command.make_context("serve", ["--connect-rate", "0.5",
                                                  "--connect-burst", "3"]).params
    assert Config(**params).connect_rate == 0.5 and Config(**params).connect_burst == 3
    result = CliRunner().invoke(serve_command, ["--help"], terminal_width=200)
    assert "TRIO_CHAT_CONNECT_RATE" in result.output
    assert "TRIO_CHAT_CONNECT_BURST" in result.output
    env = {"TRIO_CHAT_CONNECT_RATE": "0", "TRIO_CHAT_CONNECT_BURST": "7"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        params = serve_command.make_context("serve", []).params
    assert (params["connect_rate"], params["connect_burst"]) == (0.0, 7)


async def test_loopback_is_not_exempt_on_a_real_server(nursery: trio.Nursery) -> None:
    """The defaults, over 127.0.0.1: 20 connections at once, the 21st refused."""
    bound = await nursery.start(serve, Config(tcp_port=0, ws_port=0))
    clients = [await TcpClient.connect(bound.tcp_port) for _ in range(20)]
    for i, client in enumerate(clients):
        await client.join(f"c{i}")
    extra = await TcpClient.connect(bound.tcp_port)
    error = await extra.recv()
    assert error["code"] == RATE_LIMITED and "new connections" in error["text"]
    assert await extra.eof()
    for client in [*clients, extra]:
        await client.aclose()
