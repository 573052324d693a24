"""Interactive mode: a full-screen chat on urwid's ``TrioEventLoop``.

A message pane (scrolls with PgUp/PgDn, keeps at most ``MAX_LINES``), a status line
and an input line that incoming messages never clobber: urwid redraws the whole
screen, so a message arriving while you type lands in the pane above your input.
All I/O runs as Trio tasks in one thread; urwid's loop is one of them.
"""

from __future__ import annotations

import logging
import signal
import zlib
from typing import Any

import trio
import urwid

from .. import protocol
from .config import ClientConfig
from .display import clean, local_time, user_list
from .session import ChatSession, State, Status
from .transport import ClientError

FlowWidget = urwid.widget.AbstractFlowWidget

#: Lines kept in the message pane; older ones are dropped.
MAX_LINES = 5000

HELP = (
    "commands: /who (who is online), /nick NEW (change name), /quit (or Ctrl-C, "
    "Ctrl-D), /help; //text sends a line starting with '/'; PgUp/PgDn scroll"
)

USER_COLOURS = (
    "light cyan",
    "light green",
    "yellow",
    "light magenta",
    "light blue",
    "brown",
    "dark cyan",
    "dark green",
    "dark magenta",
    "light red",
)

PALETTE: list[tuple[str, str, str] | tuple[str, str, str, str]] = [
    ("status", "black", "light gray"),
    ("status bad", "white", "dark red"),
    ("time", "dark gray", "default"),
    ("notice", "dark gray", "default"),
    ("history", "dark gray", "default"),
    ("error", "light red", "default"),
    ("me", "white,bold", "default"),
    ("caption", "bold", "default"),
    *((f"user{i}", colour, "default") for i, colour in enumerate(USER_COLOURS)),
]


def user_attr(name: str) -> str:
    """The same colour for a name on every screen and in every session."""
    return f"user{zlib.crc32(name.casefold().encode()) % len(USER_COLOURS)}"


class ChatFrame(urwid.Frame["urwid.ListBox[int]", None, urwid.Pile]):
    """Keys go to the input line, except the ones that scroll the message pane."""

    def keypress(self, size: tuple[int, int], key: str) -> str | None:  # type: ignore[override]
        if key in ("page up", "page down"):
            maxcol, maxrow = size
            (top, bottom), _ = self.frame_top_bottom(size, True)
            rows = max(1, maxrow - top - bottom)
            return self.body.keypress((maxcol, rows), key)
        return super().keypress(size, key)


class ChatApp:
    """The urwid front end of a :class:`ChatSession`."""

    def __init__(self, config: ClientConfig) -> None:
        self.walker: urwid.SimpleFocusListWalker[FlowWidget] = urwid.SimpleFocusListWalker([])
        self.pane = urwid.ListBox(self.walker)
        self.status_text = urwid.Text("", wrap="ellipsis")  # always one line
        self.status_bar = urwid.AttrMap(self.status_text, "status")
        self.input = urwid.Edit(("caption", "> "))
        self.frame = ChatFrame(
            self.pane, footer=urwid.Pile([self.status_bar, self.input]), focus_part="footer"
        )
        self.session = ChatSession(config, self)
        self.quitting = False
        self._state: State | None = None
        self._name_wanted: trio.Event | None = None
        self._chosen = ""
        self.status(self.session.status)

    # ------------------------------------------------------------ Frontend for the session

    def message(self, message: dict[str, Any]) -> None:
        rendered = self.render(message)
        if rendered is not None:
            when, markup = rendered
            self.add(markup, when)

    def status(self, status: Status) -> None:
        previous, self._state = self._state, status.state
        if previous is State.CONNECTED and status.state is State.RECONNECTING:
            self.notice(f"-- {status.reason}; reconnecting", "error")
        elif previous is State.RECONNECTING and status.state is State.CONNECTED:
            self.notice(f"-- reconnected to {status.address}")
        parts = [f" {status.address}"]
        bad = status.state is not State.CONNECTED
        if status.state is State.CONNECTED:
            parts.append(f"connected as {status.name}")
            if status.online is not None:
                parts.append(f"{status.online} online")
        elif status.state is State.RECONNECTING:
            retry = f" in {status.retry_in:.1f} s" if status.retry_in is not None else ""
            parts.append(f"{status.reason}; reconnecting{retry}")
        else:
            parts.append(status.state.value)
        if self.quitting:
            parts.append("leaving")
        self.status_text.set_text("  |  ".join(parts))
        self.status_bar.set_attr_map({None: "status bad" if bad else "status"})

    async def choose_name(self, refused: str | None, reason: str | None) -> str:
        """Ask on the input line; the session waits (no timeout: a person is typing)."""
        if reason:
            self.notice(f"{reason}; choose another name", "error")
        else:
            self.notice("what name do you want to chat under?")
        self.input.set_caption(("caption", "name: "))
        self.input.set_edit_text("")
        self._name_wanted = trio.Event()
        try:
            await self._name_wanted.wait()
        finally:
            self._name_wanted = None
            self.input.set_caption(("caption", "> "))
        return self._chosen

    # ------------------------------------------------------------ the message pane

    def render(self, message: dict[str, Any]) -> tuple[str, list[Any]] | None:
        """(local time, urwid markup) for a server message; None for the ones not shown.

        Replayed history is dimmed, notices are dimmed, your own messages are marked
        ``>`` and every name has its own colour.
        """
        kind = message.get("type")
        when = local_time(message.get("timestamp"))
        earlier = message.get("history") is True
        if kind == "chat":
            user = clean(str(message.get("user", "?")))
            text = clean(str(message.get("text", "")), newlines=True)
            if earlier:
                return when, [("history", f"  {user}: {text}")]
            own = self.session.name is not None and user.casefold() == self.session.name.casefold()
            mark = ("me", "> ") if own else "  "
            return when, [mark, (user_attr(user), user), ": ", text]
        if kind == "system":
            text = clean(str(message.get("text", "")))
            return when, [("history" if earlier else "notice", f"  -- {text}")]
        if kind == "welcome":
            you = clean(str(message.get("user")))
            return when, [("notice", f"  -- you are {you}; {user_list(message)}")]
        if kind == "users":
            return when, [("notice", f"  -- {user_list(message)}")]
        if kind == "error":
            text = clean(str(message.get("text", message.get("code"))))
            return when, [("error", f"  !! {text}")]
        return None

    def add(self, markup: list[Any], when: str | None = None) -> None:
        """Append a message; follow it if the pane was showing the newest one.

        With a time, the time gets a column of its own, so wrapped lines stay
        indented under the message rather than under the time.
        """
        line: FlowWidget = urwid.Text(markup)
        if when is not None:
            line = urwid.Columns([(len(when) + 1, urwid.Text(("time", when))), line])
        walker = self.walker
        at_bottom = not walker or self.pane.focus_position == len(walker) - 1
        walker.append(line)
        if len(walker) > MAX_LINES:
            del walker[: len(walker) - MAX_LINES]
        if at_bottom:
            self.pane.set_focus(len(walker) - 1)

    def notice(self, text: str, attr: str = "notice") -> None:
        self.add([(attr, text)])

    # ------------------------------------------------------------ keys

    def on_key(self, key: str | tuple[Any, ...]) -> bool | None:
        """Keys the input line did not use (urwid's ``unhandled_input``)."""
        if key == "enter":
            line = self.input.edit_text
            self.input.set_edit_text("")
            self.submit(line)
            return True
        if key in ("ctrl c", "ctrl d"):
            self.quit()
            return True
        return None

    def submit(self, line: str) -> None:
        if self._name_wanted is not None:
            try:
                self._chosen = protocol.validate_name(line)
            except protocol.ProtocolError as exc:
                self.notice(exc.text, "error")
                return
            self._name_wanted.set()
            return
        if not line.strip():
            return
        if line.startswith("/") and not line.startswith("//"):
            self.command(line)
            return
        text = line[1:] if line.startswith("//") else line
        self.send({"type": "chat", "text": text})

    def command(self, line: str) -> None:
        command, _, arg = line.strip().partition(" ")
        command = command.lower()
        if command in ("/quit", "/exit"):
            self.quit()
        elif command == "/help":
            self.notice(HELP)
        elif command == "/who":
            self.send({"type": "who"})
        elif command in ("/nick", "/name"):
            try:
                name = protocol.validate_name(arg)
            except protocol.ProtocolError as exc:
                self.notice(f"usage: /nick NEW ({exc.text})", "error")
                return
            self.send({"type": "join", "user": name})
        else:
            self.notice(f"unknown command {command[:32]}; try /help", "error")

    def send(self, message: dict[str, Any]) -> None:
        if not self.session.send_nowait(message):
            self.notice("too many unsent messages; wait for the connection", "error")

    def quit(self) -> None:
        """Leave politely when connected (after what is queued); otherwise, or on a
        second request, end at once."""
        if self._name_wanted is not None:
            self.session.stop()
            return
        if (
            not self.quitting
            and self.session.state is State.CONNECTED
            and self.session.send_nowait({"type": "leave"})
        ):
            self.quitting = True
            self.status(self.session.status)
            return
        self.session.stop()

    async def watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for _ in signals:
                self.quit()


async def run_tui(config: ClientConfig) -> None:
    """Run the full-screen client until the user quits; raises ClientError (after the
    terminal is restored) when the server cannot be reached or the session ends."""
    # Log records would scribble over the screen.
    logging.getLogger("trio_chat").addHandler(logging.NullHandler())
    logging.getLogger("trio_chat").propagate = False
    app = ChatApp(config)
    event_loop = urwid.TrioEventLoop()
    loop = urwid.MainLoop(
        app.frame, PALETTE, event_loop=event_loop, unhandled_input=app.on_key, handle_mouse=False
    )
    error: ClientError | None = None
    with loop.start():
        # Ctrl-C (and Ctrl-\) arrive as keys, so /quit, Ctrl-C and Ctrl-D behave alike.
        screen = loop.screen
        if isinstance(screen, urwid.display.raw.Screen):
            screen.tty_signal_keys(intr="undefined", quit="undefined")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(event_loop.run_async)
            nursery.start_soon(app.watch_signals)
            app.notice(f"trio-chat: connecting to {config.address}; /help for commands")
            try:
                await app.session.run()
            except ClientError as exc:
                error = exc
            finally:
                nursery.cancel_scope.cancel()
    if error is not None:
        raise error
