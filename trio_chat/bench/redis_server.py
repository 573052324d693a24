"""A throwaway ``redis-server`` on a free loopback port, for the tests and the bench.

Cluster mode (``trio-chat serve --redis URL``) is tested and measured against a real
Redis, never a fake: this starts one with no persistence (``--save "" --appendonly
no``, in a temporary directory), so every start is empty, and ``restart()`` behaves like
a Redis that crashed and came back without its data. It is synchronous (subprocess and
a blocking socket) so that the bench's parent process and plain pytest fixtures can use
it alike; from a Trio test whose servers run in the same event loop, call the slower
methods through ``trio.to_thread.run_sync`` so the loop keeps running meanwhile.

It speaks just enough RESP2 (``command()``) to check it is up and to look at its data.

For high availability, :class:`RedisServer` can start as a replica of another
(``replica_of``), and :class:`RedisSentinel` runs ``redis-sentinel`` (Debian package
redis-sentinel) monitoring a primary: :func:`sentinel_url` names them as
``trio-chat serve --redis`` takes them.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

HOST = "127.0.0.1"
EXECUTABLE = "redis-server"
#: Seconds a start may take before it is an error (the machine may be slow and busy).
START_TIMEOUT = 20.0
#: Seconds a stopping redis-server gets to exit before it is killed.
STOP_TIMEOUT = 5.0
POLL_INTERVAL = 0.02
#: Starts tried on fresh ports when another process took the chosen one meanwhile.
PORT_TRIES = 3


class RedisServerMissing(RuntimeError):
    """No ``redis-server`` executable: install the Debian package redis-server."""


class RedisError(Exception):
    """An error reply (``-ERR ...``) from Redis."""


def free_port(host: str = HOST) -> int:
    """A port nothing listens on right now (another process may still take it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _encode(args: tuple[str | bytes | int, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read_reply(f: BinaryIO) -> Any:
    """One RESP2 reply: str (status), int, bytes or None (bulk), list, or RedisError."""
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("Redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise ConnectionError(f"not a RESP reply: {line[:80]!r}")


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port``; see the module docstring.

    ``port`` None picks a free port at the first start; later starts (``restart()``,
    ``start()`` after ``kill()`` or ``stop()``) reuse it, so clients reconnect to the
    same URL.
    """

    #: The Debian package that has the executable (for the error when it is missing).
    PACKAGE = "redis-server"

    def __init__(
        self,
        port: int | None = None,
        *,
        executable: str = EXECUTABLE,
        start_timeout: float = START_TIMEOUT,
        replica_of: RedisServer | None = None,
    ) -> None:
        path = shutil.which(executable)
        if path is None:
            raise RedisServerMissing(
                f"{executable} not found on PATH (Debian package {self.PACKAGE})"
            )
        self.executable = path
        #: Start as a replica of this primary (``--replicaof``); a sentinel may
        #: reconfigure it later (a failover), so this is only where it starts.
        self.replica_of = replica_of
        self.start_timeout = start_timeout
        self._fixed_port = port is not None
        self.port = port or 0
        self.process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    # ------------------------------------------------------------ addresses

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("redis-server is not running")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> Path | None:
        return None if self._dir is None else self._dir / "redis.log"

    def log_tail(self, lines: int = 10) -> str:
        """The end of redis-server's own log (why it failed to start, say)."""
        path = self.log_path
        if path is None:
            return ""
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    # ------------------------------------------------------------ lifecycle

    def start(self) -> RedisServer:
        """Start it (empty) and wait until it answers PING; returns self."""
        if self.running:
            raise RuntimeError(f"redis-server already running on port {self.port}")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="trio-chat-redis-"))
        for attempt in range(1 if self._fixed_port else PORT_TRIES):
            if not self._fixed_port and (attempt > 0 or not self.port):
                self.port = free_port()
            self._spawn()
            try:
                self._wait_ready()
                return self
            except _Exited:
                port_taken = "in use" in self.log_tail(2)
                if self._fixed_port or not port_taken or attempt == PORT_TRIES - 1:
                    raise RuntimeError(
                        f"redis-server exited at start on port {self.port}:\n{self.log_tail()}"
                    ) from None
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop it (SIGTERM: with no save points configured it exits without saving)."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash: clients see their connections cut, nothing is saved."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            process.kill()
        process.wait()

    def restart(self) -> None:
        """Crash and come back empty on the same port (no persistence)."""
        self.kill()
        self.start()

    def close(self) -> None:
        """Stop it and remove its directory."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------ talking to it

    def command(self, *args: str | bytes | int, timeout: float = 5.0) -> Any:
        """Send one command on a fresh connection and return its reply; an error reply
        raises RedisError. For checks in tests and the bench, not for load."""
        with socket.create_connection((HOST, self.port), timeout=timeout) as sock:
            sock.sendall(_encode(args))
            with sock.makefile("rb") as f:
                reply = _read_reply(f)
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def ping(self) -> bool:
        """True if it answers PING with PONG now (False while loading or down)."""
        try:
            return bool(self.command("PING", timeout=1.0) == "PONG")
        except (OSError, RedisError):
            return False

    # ------------------------------------------------------------ internals

    def _command(self) -> list[str]:
        assert self._dir is not None
        command = [
            self.executable,
            "--port", str(self.port), "--bind", HOST,
            "--save", "", "--appendonly", "no",
            "--dir", str(self._dir), "--logfile", str(self._dir / "redis.log"),
            "--daemonize", "no",
            # A replica's first sync at once (not after the default 5 s wait for more).
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        if self.replica_of is not None:
            command += ["--replicaof", HOST, str(self.replica_of.port)]
        return command

    def _spawn(self) -> None:
        command = self._command()
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def _is_ours(self) -> bool:
        """Whether our process answers on the port (not another Redis that holds it)."""
        assert self.process is not None
        try:
            info = self.command("INFO", "server", timeout=1.0)
        except (OSError, RedisError):
            return False
        return f"process_id:{self.process.pid}\r\n".encode() in info

    def _wait_ready(self) -> None:
        """Poll until it answers: an external process has no readiness signal to wait on."""
        deadline = time.monotonic() + self.start_timeout
        while not self._is_ours():
            assert self.process is not None
            if self.process.poll() is not None:
                self.process = None
                raise _Exited
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer PING within "
                    f"{self.start_timeout} s:\n{self.log_tail()}"
                )
            time.sleep(POLL_INTERVAL)


class _Exited(Exception):
    """redis-server exited during its start (see its log)."""


SENTINEL_EXECUTABLE = "redis-sentinel"


class RedisSentinel(RedisServer):
    """One ``redis-sentinel`` on a free loopback port, monitoring ``primary`` as
    ``service``. Failover is quick, for tests: the primary is down after
    ``down_after_ms`` without an answer, and ``quorum`` sentinels must agree.

    A sentinel rewrites its configuration file as it learns (replicas, other
    sentinels, failovers), so each has its own, in its own directory.
    """

    PACKAGE = "redis-sentinel"

    def __init__(
        self,
        primary: RedisServer,
        *,
        service: str = "mymaster",
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        executable: str = SENTINEL_EXECUTABLE,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        super().__init__(executable=executable, start_timeout=start_timeout)
        self.primary = primary
        self.service = service
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    def _command(self) -> list[str]:
        assert self._dir is not None
        config = self._dir / "sentinel.conf"
        if not config.exists():  # a restart keeps what the sentinel learned
            name = self.service
            config.write_text("\n".join([
                f"port {self.port}", f"bind {HOST}", f"dir {self._dir}",
                f"logfile {self._dir / 'redis.log'}", "daemonize no",
                f"sentinel monitor {name} {HOST} {self.primary.port} {self.quorum}",
                f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
                f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {name} 1", "",
            ]))  # fmt: skip
        return [self.executable, str(config)]

    def primary_address(self) -> tuple[str, int] | None:
        """Where this sentinel says the primary is now (None if it does not know)."""
        try:
            reply = self.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service,
                                 timeout=1.0)
        except (OSError, RedisError):
            return None
        if not reply:
            return None
        return reply[0].decode(), int(reply[1])


def sentinel_url(sentinels: list[RedisSentinel], db: int = 0) -> str:
    """``redis+sentinel://host:port,host:port.../service[/db]`` for ``--redis``."""
    hosts = ",".join(f"{HOST}:{sentinel.port}" for sentinel in sentinels)
    return f"redis+sentinel://{hosts}/{sentinels[0].service}" + (f"/{db}" if db else "")
