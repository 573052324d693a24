"""The measured servers' processes: start and stop them, read their CPU and memory,
profile them.

A server is a child process started from its target's command (trio-chat's own, or a
peer's), considered up once its URL accepts a connection; a cluster target is several
such processes and the redis-server they share, started first. CPU seconds come from
psutil (``/proc/PID/stat``), peak RSS from the kernel's own high-water mark
(``VmHWM`` in ``/proc/PID/status``). psutil and py-spy (the ``bench`` extra) are
imported or run only when a measurement needs them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .redis_server import RedisServer
from .targets import Settings, Target, parse_url


def wait_listening(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Poll until ``url`` accepts a connection: a peer has no readiness signal."""
    _, host, port, _ = parse_url(url)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not listening on {host}:{port} after {timeout} s")
        time.sleep(0.1)


def refuse_busy(url: str) -> None:
    """Something already listening on a target's port would be measured instead of it."""
    _, host, port, _ = parse_url(url)
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        raise RuntimeError(f"{host}:{port} is already in use; stop whatever listens there")


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the kernel's own high-water mark of the process's RSS."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 2**20


def rss_bytes(pid: int) -> int:
    """The process's resident set size now."""
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


@contextlib.contextmanager
def running_server(target: Target) -> Iterator[subprocess.Popen[bytes]]:
    """One server process, listening, for the ``with`` block; terminated after it."""
    assert target.command is not None
    refuse_busy(target.url)
    proc = subprocess.Popen(
        target.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_listening(target.url, proc)
        if target.mixed_url:
            wait_listening(target.mixed_url, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Running:
    """The processes of one measured target: its servers, and its redis-server if any."""

    servers: list[subprocess.Popen[bytes]]
    redis: RedisServer | None


@contextlib.contextmanager
def running_servers(target: Target) -> Iterator[Running]:
    """Redis first (a cluster server refuses to start without it), then every process."""
    with contextlib.ExitStack() as stack:
        redis = None
        if target.redis_port is not None:
            redis = stack.enter_context(RedisServer(target.redis_port))
            for _ in range(target.redis_replicas):
                stack.enter_context(RedisServer(replica_of=redis))
        servers = [stack.enter_context(running_server(t)) for t in (target, *target.nodes)]
        yield Running(servers, redis)


def cpu_seconds(processes: Sequence[Any]) -> list[float]:
    """User + system CPU seconds of each psutil.Process so far."""
    return [sum(p.cpu_times()[:2]) for p in processes]


def find_py_spy() -> str | None:
    """py-spy on PATH, or beside this Python (a virtualenv's bin/, not on PATH)."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return shutil.which("py-spy") or (beside if os.access(beside, os.X_OK) else None)


def start_profile(
    target: Target, s: Settings, pid: int, run: int
) -> tuple[subprocess.Popen[bytes], str] | None:
    """py-spy on the server for the measured seconds (collapsed stacks, one per line)."""
    if not s.profile_dir:
        return None
    spy = find_py_spy()
    if spy is None:
        raise RuntimeError("--profile-dir needs py-spy (pip install 'trio-chat[bench]')")
    os.makedirs(s.profile_dir, exist_ok=True)
    out = os.path.join(s.profile_dir, f"{target.name.replace(' ', '-')}-run{run + 1}.txt")
    command = [spy, "record", "--pid", str(pid), "--duration", str(max(1, int(s.duration))),
               "--format", "raw", "--nolineno", "--nonblocking", "--output", out]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out


def profile_top(path: str, limit: int = 12) -> list[tuple[str, float]]:
    """Functions by share of samples spent in them (self time), from a py-spy raw file."""
    own: dict[str, int] = {}
    total = 0
    with contextlib.suppress(OSError), open(path) as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            if not count.isdigit():
                continue
            leaf = stack.rsplit(";", 1)[-1]
            own[leaf] = own.get(leaf, 0) + int(count)
            total += int(count)
    top = sorted(own.items(), key=lambda item: -item[1])[:limit]
    return [(name, round(n / total, 3)) for name, n in top] if total else []

