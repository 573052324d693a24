"""The Python heap an idle joined connection holds, by library (a benchmark, not a
test; issue 20, memory per idle connection).

``trio-chat bench --scale`` reports RSS per connection, which moves by a few KB between
runs (how the allocator's heap fragments under the join storm). This reports the
steadier figure it is made of: a real ``trio-chat serve`` runs under ``tracemalloc``
(Python's own allocations only); the benchmark's loader joins one client, the server
snapshots its heap, the loader joins ``--clients`` more and lets them idle for two
seconds, the server snapshots again; the difference per connection is reported in
total and by where it was allocated (trio, trio-websocket, wsproto, trio-chat...),
with the lines that hold the most. Each ``--kind`` (``tcp``, ``ws``) is measured on its
own server.

Run: ``.venv/bin/python -m trio_chat.bench.heap --kind tcp --kind ws --clients 1000``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
import tracemalloc
from collections import Counter
from dataclasses import replace
from pathlib import Path

from .loader import Loaders
from .runner import split
from .servers import rss_bytes, running_server
from .targets import Settings, our_targets

#: Run as the server: tracemalloc on, SIGUSR1 writes a snapshot to ``$SNAPSHOT.N``
#: (then ``$SNAPSHOT.N.done``), then ``trio-chat serve``.
SERVER = """\
import os, signal, sys, tracemalloc
tracemalloc.start()
taken = 0
def snapshot(*_):
    global taken
    taken += 1
    path = f"{os.environ['SNAPSHOT']}.{taken}"
    tracemalloc.take_snapshot().dump(path)
    open(path + ".done", "w").close()
signal.signal(signal.SIGUSR1, snapshot)
from trio_chat.cli import main
sys.argv = ["trio-chat", *sys.argv[1:]]
main()
"""
IDLE_SECONDS = 2.0


def library(filename: str) -> str:
    """Who allocated: a package under site-packages, trio-chat, or the file itself."""
    if "site-packages/" in filename:
        return filename.split("site-packages/")[-1].split("/")[0]
    if "/trio_chat/" in filename:
        return "trio-chat"
    if filename.startswith("<attrs generated"):
        return "trio"  # attrs classes are trio's (CancelStatus, Event, channels)
    return os.path.basename(filename)


def measure(kind: str, clients: int, top: int) -> str:
    """Start a server for ``kind``, join and idle ``clients``, report its heap."""
    (target,) = our_targets([kind])
    assert target.command is not None
    command = list(target.command)
    at = command.index("-m")
    command[at : at + 2] = ["-c", SERVER]
    target = replace(target, command=tuple(command))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SNAPSHOT"] = base = str(Path(tmp) / "heap")
        settings = Settings(clients=clients + 1, loaders=1)
        with running_server(target) as proc:
            loaders = Loaders(target, settings, clients + 1)
            try:
                loaders.ask([("connect", [0], set())], 600)  # one join: what is once
                time.sleep(1.0)
                before, rss0 = _snapshot(proc, base, 1), rss_bytes(proc.pid)
                replies = loaders.ask(
                    [("connect", part, set()) for part in split(range(1, clients + 1), 1)],
                    600,
                )
                time.sleep(IDLE_SECONDS)
                after, rss1 = _snapshot(proc, base, 2), rss_bytes(proc.pid)
            finally:
                loaders.close()
    connected = sum(r["connected"] for r in replies)
    if connected < clients:
        raise SystemExit(f"{kind}: only {connected} of {clients} clients joined")
    return _report(kind, clients, before, after, (rss1 - rss0) / clients, top)


def _snapshot(proc: subprocess.Popen[bytes], base: str, number: int) -> tracemalloc.Snapshot:
    proc.send_signal(signal.SIGUSR1)
    done = Path(f"{base}.{number}.done")
    deadline = time.monotonic() + 60
    while not done.exists():
        if time.monotonic() > deadline:
            raise SystemExit("the server wrote no heap snapshot within 60 s")
        time.sleep(0.05)
    ours = tracemalloc.Filter(False, tracemalloc.__file__)
    return tracemalloc.Snapshot.load(f"{base}.{number}").filter_traces([ours])


def _report(
    kind: str, clients: int, before: tracemalloc.Snapshot, after: tracemalloc.Snapshot,
    rss: float, top: int,
) -> str:
    by_file = after.compare_to(before, "filename")
    total = sum(stat.size_diff for stat in by_file)
    libraries: Counter[str] = Counter()
    for stat in by_file:
        libraries[library(stat.traceback[0].filename)] += stat.size_diff
    lines = [
        f"{kind}: {total / clients / 1024:.2f} KB of Python heap per idle joined "
        f"connection ({clients} connections; RSS grew {rss / 1024:.1f} KB each, "
        "tracemalloc's own tables included)"
    ]
    for name, size in libraries.most_common():
        if size / clients >= 50:
            lines.append(f"  {size / clients:7.0f} B  {name}")
    if top:
        lines.append("  where (bytes, allocations per connection):")
        for stat in after.compare_to(before, "lineno")[:top]:
            frame = stat.traceback[0]
            where = f"{library(frame.filename)} {os.path.basename(frame.filename)}:{frame.lineno}"
            lines.append(
                f"  {stat.size_diff / clients:7.0f} B {stat.count_diff / clients:5.2f}  {where}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", action="append", choices=["tcp", "ws"],
                        help="connections of this kind (repeat for both; default both)")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--top", type=int, default=0, help="also the N lines holding most")
    args = parser.parse_args(argv)
    if args.clients < 1:
        parser.error("--clients must be at least 1")
    for kind in args.kind or ["tcp", "ws"]:
        print(measure(kind, args.clients, args.top), flush=True)


if __name__ == "__main__":
    main()
