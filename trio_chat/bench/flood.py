"""Another client's ping round trip while connections flood newlines (a benchmark, not
a test; issue 13).

Starts a real ``trio-chat serve`` (default limits, ``--db :memory:``), joins five
pingers (each pinging 4 times a second, under the rate limit), and measures their
``ping`` round trip (p50, p99, max) twice in the same run: first with nobody else
connected (the peer), then while ``--flooders`` joined connections send
64 KiB blocks of ``\\n`` as fast as the server takes them, until every flooder has been
cut off or ``--seconds`` have passed. It also reports which flooders were told
``rate_limited`` and closed. ``--server-path DIR`` runs the server from another
checkout (put first on ``PYTHONPATH``), to compare with an older version.

Run: ``.venv/bin/python -m trio_chat.bench.flood`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from contextlib import suppress

import trio

LISTENING = re.compile(rb"trio-chat listening: tcp://127\.0\.0\.1:(\d+)")
NEWLINES = b"\n" * (64 * 1024)
#: Pingers, each pinging this often: 4 a second, under the default --rate-limit (5).
PINGERS = 5
PING_EVERY = 0.25
_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


async def start_server(server_path: str | None) -> tuple[trio.Process, int]:
    env = dict(os.environ)
    if server_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [server_path, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "trio_chat", "serve", "--tcp-port", "0", "--ws-port", "0",
               "--db", ":memory:"]
    # From that directory too: ``python -m`` puts the working directory first on the path.
    process = await trio.lowlevel.open_process(command, stderr=-1, env=env, cwd=server_path)
    assert process.stderr is not None
    seen = b""
    while not (match := LISTENING.search(seen)):
        chunk = await process.stderr.receive_some()
        if not chunk:
            raise SystemExit(f"server did not start: {seen.decode()}")
        seen += chunk
    return process, int(match.group(1))


class Lines:
    """Reads JSON lines off a stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._partial = b""
        self._lines: list[bytes] = []

    async def next(self) -> dict[str, object] | None:
        while not self._lines:
            try:
                data = await self.stream.receive_some(1 << 16)
            except _ERRORS:
                data = b""
            if not data:
                return None
            *self._lines, self._partial = (self._partial + data).split(b"\n")
        result: dict[str, object] = json.loads(self._lines.pop(0))
        return result


async def joined(port: int, name: str) -> Lines:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(json.dumps({"type": "join", "user": name}).encode() + b"\n")
    lines = Lines(stream)
    while (msg := await lines.next()) is not None and msg.get("type") != "welcome":
        pass
    return lines


async def ping_rtts(pingers: list[Lines], until: trio.Event, limit: float) -> list[float]:
    """Each pinger pings every :data:`PING_EVERY` seconds (under the default rate limit)
    until ``until`` is set or ``limit`` seconds have passed."""
    rtts: list[float] = []

    async def pinging(pinger: Lines) -> None:
        while not until.is_set():
            start = time.perf_counter()
            await pinger.stream.send_all(b'{"type":"ping"}\n')
            while (msg := await pinger.next()) is not None and msg.get("type") != "pong":
                pass
            rtts.append(time.perf_counter() - start)
            await trio.sleep(PING_EVERY)

    with trio.move_on_after(limit):
        async with trio.open_nursery() as nursery:
            for pinger in pingers:
                nursery.start_soon(pinging, pinger)
    return rtts


async def flooder(port: int, index: int, told: list[bool], out: list[int],
                  done: trio.Event, count: int) -> None:
    lines = await joined(port, f"Flooder{index}")

    async def send() -> None:
        with suppress(*_ERRORS):
            while True:
                await lines.stream.send_all(NEWLINES)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        while (msg := await lines.next()) is not None:
            if msg.get("type") == "error" and msg.get("code") == "rate_limited":
                told[index] = True
        nursery.cancel_scope.cancel()
    await lines.stream.aclose()
    out.append(index)
    if len(out) == count:
        done.set()


def summary(rtts: list[float]) -> str:
    ordered = sorted(rtts)
    p50, p99, top = ordered[len(ordered) // 2], _p99(rtts), ordered[-1]
    return (f"{len(ordered)} pings, p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
            f"max {top * 1000:.1f} ms")


async def main(args: argparse.Namespace) -> None:
    process, port = await start_server(args.server_path)
    assert process.stderr is not None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, process.stderr)
            pingers = [await joined(port, f"Pinger{i}") for i in range(PINGERS)]
            quiet = await ping_rtts(pingers, trio.Event(), args.quiet_seconds)
            print(f"no flooders (peer):        {summary(quiet)}")
            told = [False] * args.flooders
            out: list[int] = []
            done = trio.Event()
            for index in range(args.flooders):
                nursery.start_soon(flooder, port, index, told, out, done, args.flooders)
            start = time.perf_counter()
            flooded = await ping_rtts(pingers, done, args.seconds)
            elapsed = time.perf_counter() - start
            print(f"{args.flooders} newline flooders:      {summary(flooded)}  "
                  f"-> p99 x{_p99(flooded) / _p99(quiet):.1f} the peer's")
            print(f"flooders told rate_limited and closed: {sum(told)} of {args.flooders} "
                  f"(within {elapsed:.1f} s)")
            nursery.cancel_scope.cancel()
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()


def _p99(rtts: list[float]) -> float:
    ordered = sorted(rtts)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some():
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flooders", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20,
                        help="longest the flood phase lasts (the flooders may never be cut off)")
    parser.add_argument("--quiet-seconds", type=float, default=5)
    parser.add_argument("--server-path", help="run the server from this checkout instead")
    trio.run(main, parser.parse_args())
