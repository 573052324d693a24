"""The interactive ``trio-chat join`` in a real terminal: a private tmux server."""

from __future__ import annotations

import os
import shlex
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from .processes import client_env
from .waits import WAIT

#: Seconds between two looks at a tmux screen while waiting for something to appear.
POLL = 0.05
#: For a test that drives a terminal: skipped where tmux is missing, never in CI.
needs_tmux = pytest.mark.skipif(
    shutil.which("tmux") is None and not os.environ.get("CI"),
    reason="tmux is not installed (apt-get install tmux; .ci/run does); CI never skips",
)


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
        return await self.wait_until(
            lambda screen: any(text in line for line in screen), f"{text!r} showed"
        )

    async def wait_until(self, check: Callable[[list[str]], bool], what: str) -> list[str]:
        """Poll the screen (bounded by WAIT seconds in all) until ``check(screen)``."""
        screen: list[str] = []
        try:
            with trio.fail_after(WAIT):
                while True:
                    screen = await self.screen()
                    if check(screen):
                        return screen
                    await trio.sleep(POLL)
        except trio.TooSlowError:
            raise AssertionError(f"never {what}; screen:\n" + "\n".join(screen)) from None

    async def paste(self, text: str) -> None:
        """Paste as a terminal does (bracketed, if the program asked for it)."""
        await self.tmux("set-buffer", "--", text)
        await self.tmux("paste-buffer", "-p", "-t", "chat")

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
