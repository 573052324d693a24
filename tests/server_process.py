"""A trio-chat server in a child process, for tests of signals, logs and memory."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import trio

from trio_chat.protocol import LineBuffer

LISTENING = re.compile(r"listening: tcp://[^:]+:(\d+) ws://[^:]+:(\d+)")
ADMIN = re.compile(r"admin listener: http://[^ ]+:(\d+)/")


class ServerProcess:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.tcp_port = 0
        self.ws_port = 0
        #: With --admin-port: the admin listener's port (logged before "listening").
        self.admin_port: int | None = None
        self.log: list[str] = []
        self._buffer = LineBuffer(1 << 20)
        self._pending: list[str] = []

    @property
    def pid(self) -> int:
        return self.process.pid

    async def log_line(self) -> str | None:
        """The next line the server logged (stderr), or None once it has exited."""
        assert self.process.stderr is not None
        while not self._pending:
            data = await self.process.stderr.receive_some(65536)
            if not data:
                return None
            self._pending.extend(line.decode() for line in self._buffer.feed(data))
        line = self._pending.pop(0)
        self.log.append(line)
        return line

    async def wait_log(self, text: str) -> str:
        """Read the log until a line contains ``text``."""
        while (line := await self.log_line()) is not None:
            if text in line:
                return line
        raise AssertionError(f"server exited without logging {text!r}: {self.log}")

    async def rest_of_log(self) -> list[str]:
        while await self.log_line() is not None:
            pass
        return self.log

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)


@asynccontextmanager
async def server_process(*args: str, wait: float = 30) -> AsyncIterator[ServerProcess]:
    """Run ``trio-chat serve`` on ephemeral loopback ports; killed at the end if alive."""
    # History in memory unless a test passes its own --db (the last one given wins).
    command = [sys.executable, "-m", "trio_chat", "serve", "--tcp-port", "0", "--ws-port", "0",
               "--db", ":memory:"]
    process = await trio.lowlevel.open_process(
        [*command, *args], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    server = ServerProcess(process)
    try:
        with trio.fail_after(wait):
            line = await server.wait_log("listening")
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
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(wait) as scope:
            scope.shield = True
            await process.wait()
        assert process.stderr is not None
        with suppress(trio.ClosedResourceError):
            await process.stderr.aclose()
