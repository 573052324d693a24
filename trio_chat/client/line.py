"""Line mode: stdin lines become messages, every message becomes one stdout line.

For pipes and scripts (``echo hi | trio-chat join --name bot``) and for terminals
with ``--plain``. Every stdin line is sent as it is (no ``/commands``: a bot's output
is never mistaken for one) to the first ``--room``; every line shown from a room says
which (``#dev Ann: hi``), a direct message shows as ``(direct) Ann -> Bob: hi``. At
EOF the client leaves after what it read has been sent, and exits once the server
has closed the connection. Connection news goes to stderr, so stdout holds only the room.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import termios
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TextIO

import trio

from .. import protocol
from ..protocol import LineBuffer, ProtocolError
from .config import ClientConfig
from .display import AfterReplay, clean, format_line
from .rooms import LOBBY, in_room
from .session import ChatSession, JoinRefused, State, Status
from .transport import ClientError

RECEIVE_SIZE = 64 * 1024


class LineFrontend:
    def __init__(self, out: TextIO, err: TextIO, *, json_output: bool) -> None:
        self.out = out
        self.err = err
        self.json_output = json_output
        self._state: State | None = None
        self._order = AfterReplay()
        self.reader_gone = False
        self.on_reader_gone: Callable[[], object] = lambda: None
        #: The standard input is a terminal a person types a password into.
        self.stdin_fd = 0
        self.interactive = False
        #: Where the next stdin line goes while a password is asked for.
        self.password_wanted: trio.MemorySendChannel[str] | None = None

    def message(self, message: dict[str, Any]) -> None:
        lines: list[str]
        if self.json_output:
            lines = [protocol.encode(message)]  # as the server sent them, in its order
        else:
            lines = [line for shown in self._order.feed(message)
                     if (line := format_line(shown)) is not None]
        if not lines or self.reader_gone:
            return
        try:
            self.out.write("".join(line + "\n" for line in lines))
            self.out.flush()
        except BrokenPipeError:
            # Whoever read our output has gone (``| head -1``): stop quietly, and
            # keep the interpreter's last flush from failing again on exit.
            self.reader_gone = True
            with suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.out.fileno())
            self.on_reader_gone()

    def status(self, status: Status) -> None:
        """Tell stderr about connection changes (not every online-count change)."""
        previous, self._state = self._state, status.state
        if status.state is State.RECONNECTING and status.retry_in is not None:
            self.say(f"{status.reason}; reconnecting in {status.retry_in:.1f} s")
        elif status.state is State.CONNECTED and previous is State.RECONNECTING:
            self.say(f"reconnected to {status.address} as {status.name}")

    def say(self, text: str) -> None:
        self.err.write(clean(text) + "\n")  # may quote the server (a close reason)
        self.err.flush()

    async def choose_name(self, refused: str | None, reason: str | None) -> str:
        raise JoinRefused(reason or "a name is required (--name)")

    async def ask_password(self, name: str, reason: str) -> str | None:
        """On a terminal (``--plain``), the next line typed, without echo; from a pipe,
        give up (a bot logs in with ``--token-file``)."""
        if not self.interactive:
            raise JoinRefused(f"{reason} (type its password in a terminal once, with "
                              "--token-file to keep the login for the next runs)")
        self.say(f"{reason}; password for {name} (empty: give up):")
        send, receive = trio.open_memory_channel[str](1)
        self.password_wanted = send
        with _no_echo(self.stdin_fd):
            try:
                password = await receive.receive()
            finally:
                self.password_wanted = None
        if not password:
            raise JoinRefused(reason)
        return password


async def run_line(
    config: ClientConfig,
    *,
    json_output: bool = False,
    stdin_fd: int = 0,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> None:
    """Chat over stdin/stdout until EOF (or SIGINT/SIGTERM); errors as in ChatSession.run."""
    out, err = out or sys.stdout, err or sys.stderr
    for stream in (out, err):
        if isinstance(stream, io.TextIOWrapper):
            # A character the terminal's encoding lacks (an emoji under a Latin-1
            # locale) shows as an escape rather than ending the client.
            stream.reconfigure(errors="backslashreplace")
    frontend = LineFrontend(out, err, json_output=json_output)
    frontend.stdin_fd = stdin_fd
    frontend.interactive = os.isatty(stdin_fd)
    session = ChatSession(config, frontend)
    frontend.on_reader_gone = session.stop
    error: ClientError | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_read_stdin, session, frontend, stdin_fd)
        nursery.start_soon(_leave_on_signal, session)
        try:
            await session.run()
        except ClientError as exc:
            error = exc  # raised below, not from inside the nursery (no ExceptionGroup)
        finally:
            nursery.cancel_scope.cancel()
    if error is not None:
        raise error


async def _read_stdin(session: ChatSession, frontend: LineFrontend, fd: int) -> None:
    """Send each stdin line as a chat message, then leave at EOF.

    ``FdStream`` reads without a thread; it works on pipes, terminals, regular files
    and /dev/null (it only waits when a read would block), and puts the descriptor
    back in blocking mode when closed.
    """
    lines = LineBuffer(protocol.MAX_LINE)
    room = session.config.rooms[0] if session.config.rooms else LOBBY
    async with trio.lowlevel.FdStream(os.dup(fd)) as stdin:
        while True:
            data = await stdin.receive_some(RECEIVE_SIZE)
            try:
                complete = lines.feed(data if data else b"\n" if lines.pending else b"")
            except ProtocolError as exc:
                frontend.say(f"stdin: {exc.text}; leaving")
                break
            for line in complete:
                text = line.decode("utf-8", errors="replace")
                if frontend.password_wanted is not None:
                    frontend.password_wanted.send_nowait(text.rstrip("\r"))
                    continue  # a password: never a message
                if text.strip():
                    await session.send(in_room({"type": "chat", "text": text}, room))
            if not data:
                break
    await session.leave()


async def _leave_on_signal(session: ChatSession) -> None:
    """Ctrl-C or SIGTERM leaves politely; a second one (or no connection) ends at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if session.state is State.CONNECTED and session.send_nowait({"type": "leave"}):
                break
            session.stop()
            return
        async for _ in signals:
            session.stop()
            return


@contextmanager
def _no_echo(fd: int) -> Iterator[None]:
    """Turn off the terminal's echo on ``fd`` while a password is typed."""
    try:
        before = termios.tcgetattr(fd)
    except termios.error:
        yield
        return
    quiet = list(before)
    quiet[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSADRAIN, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, before)
