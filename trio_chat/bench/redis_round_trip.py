"""What one Redis round trip costs a cluster server in CPU (a benchmark, not a test).

In cluster mode every chat message costs each server at least one ``XREAD`` (to read
it) and its own server one ``EVALSHA`` (to publish it); at low rates each is a round
trip of its own. This measures the CPU time (``time.process_time``: this process
only, not Redis) of one command through coredis, the client cluster mode uses, for
the commands the cluster sends, and through the lean connection its read and publish
loops use (:mod:`trio_chat.cluster.resp`), against a raw RESP exchange on a Trio socket
(the floor: the same bytes without a client library), in the same run.

Run: ``.venv/bin/python -m trio_chat.bench.redis_round_trip`` (starts its own redis-server).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Awaitable, Callable, Sequence

import coredis
import trio

from trio_chat.bench.redis_server import RedisServer, RedisServerMissing
from trio_chat.cluster.resp import Endpoint, open_lean

SCRIPT = "return ARGV[1]"


async def per_call_us(call: Callable[[], Awaitable[object]], count: int) -> float:
    await call()  # warm up (connect, load the script)
    start = time.process_time()
    for _ in range(count):
        await call()
    return (time.process_time() - start) / count * 1e6


async def main(url: str, port: int, count: int) -> None:
    results: dict[str, float] = {}
    async with coredis.Redis.from_url(url, decode_responses=True) as client:
        await client.xadd("bench", {"u": "a", "x": "hi"})
        script = client.register_script(SCRIPT)
        results["coredis PING"] = await per_call_us(client.ping, count)
        results["coredis EVALSHA"] = await per_call_us(
            lambda: script(keys=[], args=["x"]), count
        )
        results["coredis XREAD (1 entry)"] = await per_call_us(
            lambda: client.xread({"bench": "0-0"}, count=1), count
        )
    lean = await open_lean(Endpoint(host="127.0.0.1", port=port))
    async with lean:
        sha = await lean.load(SCRIPT)
        results["lean EVALSHA"] = await per_call_us(
            lambda: lean.call("EVALSHA", sha, 0, "x"), count
        )
        results["lean XREAD (1 entry)"] = await per_call_us(
            lambda: lean.call("XREAD", "COUNT", 1, "STREAMS", "bench", "0-0"), count
        )
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:

        async def raw_ping() -> None:
            await stream.send_all(b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                reply += await stream.receive_some(64)

        results["raw RESP PING (floor)"] = await per_call_us(raw_ping, count)
    floor = results["raw RESP PING (floor)"]
    for name, us in results.items():
        print(f"{name:<26} {us:8.1f} us CPU per round trip  ({us / floor:.1f}x the floor)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trio_chat.bench.redis_round_trip",
        description=(__doc__ or "").split("\n", 1)[0],
    )
    parser.add_argument("--count", type=int, default=3000, help="round trips per command")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    return args


if __name__ == "__main__":
    count = parse_args().count
    try:
        redis = RedisServer()
    except RedisServerMissing as exc:
        raise SystemExit(f"python -m trio_chat.bench.redis_round_trip: {exc}") from None
    with redis:
        trio.run(main, redis.url, redis.port, count)
