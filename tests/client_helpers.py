"""Drive real ``trio-chat join`` processes: line mode over pipes, interactive in tmux."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import uuid
from functools import partial
from pathlib import Path

import trio

from trio_chat.protocol import LineBuffer

from .helpers import WAIT

#: Seconds between two looks at a tmux screen while waiting for something to appear.
POLL = 0.05


def join_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "trio_chat", "join", *map(str, args)]


def client_env() -> dict[str, str]:
    """The test's environment without TRIO_CHAT_* settings a developer may have."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TRIO_CHAT_")}


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


class Tmux:
    """A private tmux server (its own socket) running one command in a window."""

    def __init__(self, tmp_path: Path, width: int = 100, height: int = 24) -> None:
        self.socket = f"trio-chat-test-{uuid.uuid4().hex[:12]}"
        self.conf = tmp_path / "tmux.conf"
        self.status_file = tmp_path / "exit-status"
        self.conf.write_text("set -g status off\n")
        self.width, self.height = width, height
        self.socket_path = ""

    async def tmux(self, *args: str) -> str:
        result = await trio.run_process(
            ["tmux", "-L", self.socket, "-f", str(self.conf), *args],
            capture_stdout=True,
            capture_stderr=True,
            env=client_env(),
        )
        return result.stdout.decode()

    async def start(self, command: list[str]) -> None:
        # The shell records the exit status (written whole, then renamed into place).
        status = shlex.quote(str(self.status_file))
        written = shlex.quote(f"{self.status_file}.new")
        shell = f"{shlex.join(command)}; echo $? > {written} && mv {written} {status}"
        await self.tmux(
            "new-session", "-d", "-s", "chat", "-x", str(self.width), "-y", str(self.height),
            shell,
        )
        self.socket_path = (await self.tmux("display", "-p", "#{socket_path}")).strip()

    async def keys(self, *keys: str, literal: bool = False) -> None:
        await self.tmux("send-keys", "-t", "chat", *(["-l"] if literal else []), *keys)

    async def screen(self) -> list[str]:
        return (await self.tmux("capture-pane", "-p", "-t", "chat")).splitlines()

    async def wait_for(self, text: str) -> list[str]:
        """Poll the screen (bounded by WAIT seconds in all) until ``text`` shows."""
        screen: list[str] = []
        try:
            with trio.fail_after(WAIT):
                while True:
                    screen = await self.screen()
                    if any(text in line for line in screen):
                        return screen
                    await trio.sleep(POLL)
        except trio.TooSlowError:
            raise AssertionError(f"{text!r} never showed; screen:\n" + "\n".join(screen)) from None

    async def exit_status(self) -> int:
        """Wait (bounded) for the command to exit; its exit status.

        Read from a file the wrapping shell writes: tmux 3.3 sometimes marks the pane
        dead without ever reporting the status.
        """
        status = trio.Path(self.status_file)
        with trio.fail_after(WAIT):
            while True:
                if await status.exists():
                    return int(await status.read_text())
                await trio.sleep(POLL)

    async def kill(self) -> None:
        """Stop this tmux server (and the client in it); remove its socket file."""
        with trio.move_on_after(WAIT) as scope:
            scope.shield = True
            await trio.run_process(
                ["tmux", "-L", self.socket, "kill-server"],
                check=False,
                capture_stdout=True,
                capture_stderr=True,
            )
        if self.socket_path:
            await trio.Path(self.socket_path).unlink(missing_ok=True)
