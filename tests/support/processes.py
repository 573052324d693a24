"""trio-chat in child processes: ``serve`` (:func:`server_process`, for tests of
signals, logs, memory and several servers) and ``join`` in line mode
(:class:`JoinProcess`; the interactive client runs in :mod:`.tmux`)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path

import trio

from trio_chat.protocol import LineBuffer
from trio_chat.pulse import Pulse

from .waits import WAIT

#: ``python -m trio_chat``: this checkout's code, whatever is on PATH.
TRIO_CHAT: Sequence[str] = (sys.executable, "-m", "trio_chat")
#: The installed console script (tests of the entry point itself).
TRIO_CHAT_SCRIPT: Sequence[str] = (str(Path(sys.executable).with_name("trio-chat")),)
LISTENING = re.compile(r"listening: (?:tcp|tls)://[^:]+:(\d+) wss?://[^:]+:(\d+)")
ADMIN = re.compile(r"admin listener: http://[^ ]+:(\d+)/")


def client_env() -> dict[str, str]:
    """The test's environment without TRIO_CHAT_* settings a developer may have."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TRIO_CHAT_")}


class ServerProcess:
    """A running ``trio-chat serve``: its ports and its log (stderr), read as it comes
    so the server never blocks on a full pipe."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.tcp_port = 0
        self.ws_port = 0
        #: With ``--admin-port``: the admin listener's port (logged before "listening").
        self.admin_port: int | None = None
        #: Every line logged so far.
        self.log: list[str] = []
        #: The ``listening`` line.
        self.listening = ""
        self._read = 0  # lines of the log wait_log has looked at
        self._grew = Pulse()
        self._ended = trio.Event()

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _read_log(self) -> None:
        assert self.process.stderr is not None
        buffer = LineBuffer(1 << 20)
        try:
            with suppress(trio.ClosedResourceError):
                while data := await self.process.stderr.receive_some(65536):
                    self.log.extend(line.decode() for line in buffer.feed(data))
                    self._grew.fire()
        finally:
            self._ended.set()
            self._grew.fire()

    async def wait_log(self, text: str) -> str:
        """The next line (after the last one this returned) that contains ``text``."""
        while True:
            while self._read < len(self.log):
                line = self.log[self._read]
                self._read += 1
                if text in line:
                    return line
            if self._ended.is_set():
                raise AssertionError(f"server exited without logging {text!r}: {self.log}")
            await self._grew.wait()

    async def rest_of_log(self) -> list[str]:
        """The whole log, once the server has exited."""
        await self._ended.wait()
        return self.log

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)


@asynccontextmanager
async def server_process(
    *args: str, program: Sequence[str] = TRIO_CHAT, wait: float = 30
) -> AsyncIterator[ServerProcess]:
    """Run ``trio-chat serve`` on ephemeral loopback ports, history in memory unless
    ``args`` has its own ``--db`` (the last one given wins); killed at the end if alive."""
    command = [*program, "serve", "--tcp-port", "0", "--ws-port", "0", "--db", ":memory:"]
    process = await trio.lowlevel.open_process(
        [*command, *args], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    server = ServerProcess(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server._read_log)
            try:
                with trio.fail_after(wait):
                    line = await server.wait_log("listening")
                server.listening = line
                if line.startswith("{"):
                    line = json.loads(line)["message"]
                match = LISTENING.search(line)
                assert match, line
                server.tcp_port, server.ws_port = int(match[1]), int(match[2])
                for logged in server.log:
                    if admin := ADMIN.search(logged):
                        server.admin_port = int(admin[1])
                yield server
            finally:
                with trio.move_on_after(wait) as scope:
                    scope.shield = True
                    if process.returncode is None:
                        process.kill()
                    await process.wait()
                    await server._ended.wait()
                nursery.cancel_scope.cancel()
    finally:
        assert process.stderr is not None
        with suppress(trio.ClosedResourceError):
            await process.stderr.aclose()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (from /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """The process's resident memory in MB (from /proc: its own, not its peers')."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def join_command(*args: object) -> list[str]:
    return [*TRIO_CHAT, "join", *map(str, args)]


class JoinProcess:
    """``trio-chat join`` in line mode with stdin, stdout and stderr piped."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = LineBuffer(1 << 20)
        self._lines: list[str] = []
        self.seen: list[str] = []

    @classmethod
    async def start(
        cls, nursery: trio.Nursery, *args: object, env: dict[str, str] | None = None
    ) -> JoinProcess:
        """Start it under ``nursery``, which kills it (SIGTERM) if the test ends first."""
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                join_command(*args),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
                env={**client_env(), **(env or {})},
            )
        )
        return cls(process)

    async def send_line(self, text: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(text.encode() + b"\n")

    async def close_stdin(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.aclose()

    async def line(self) -> str | None:
        """The next stdout line, or None at EOF."""
        assert self.process.stdout is not None
        with trio.fail_after(WAIT):
            while not self._lines:
                data = await self.process.stdout.receive_some(65536)
                if not data:
                    return None
                self._lines.extend(line.decode() for line in self._buffer.feed(data))
        line = self._lines.pop(0)
        self.seen.append(line)
        return line

    async def wait_for(self, text: str) -> str:
        """Skip stdout lines until one contains ``text``."""
        while True:
            line = await self.line()
            assert line is not None, f"stdout ended before {text!r}; saw {self.seen}"
            if text in line:
                return line

    async def rest(self) -> list[str]:
        """Every stdout line up to EOF."""
        lines = []
        while (line := await self.line()) is not None:
            lines.append(line)
        return lines

    async def stderr(self) -> str:
        """Everything on stderr, up to EOF (the process has exited or is about to)."""
        assert self.process.stderr is not None
        chunks = []
        with trio.fail_after(WAIT):
            while data := await self.process.stderr.receive_some(65536):
                chunks.append(data)
        return b"".join(chunks).decode()

    async def exit_code(self) -> int:
        with trio.fail_after(WAIT):
            return await self.process.wait()
