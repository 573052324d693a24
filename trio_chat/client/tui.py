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

Markup = Any  # urwid text markup: a string, (attribute, markup), or a list of them

#: Lines kept in the message pane; older ones are dropped ...
MAX_LINES = 5000
#: ... and characters: a server sending long messages cannot make the pane hold more.
MAX_PANE_CHARS = 4_000_000
#: The prefix of a notice: a chat's prefix is a name, never this.
NOTICE = "  --"

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


class Entry(urwid.Widget):
    """One entry of the message pane: the time, a prefix (the mark and the name, or a
    notice's ``--``), and the body, each in its own column (one space apart).

    Every line of the body after its first (a newline in the message, or wrapping) is
    indented under the first, so no text from a peer can start a line where an entry
    starts: ``"x\\n  -- Ann is now known as Admin"`` cannot draw a notice. The prefix
    column takes at most half of what the time leaves (a long name wraps inside it).
    """

    _sizing = frozenset([urwid.Sizing.FLOW])

    def __init__(self, when: str | None, prefix: Markup, body: Markup) -> None:
        super().__init__()
        self._time = None if when is None else urwid.Text(("time", when))
        self._time_width = 0 if when is None else len(when)
        self._prefix = urwid.Text(prefix)
        self._prefix_width = self._prefix.pack()[0]
        self._body = urwid.Text(body)
        self._layout: tuple[int, urwid.Columns] | None = None
        #: Characters held, for the pane's budget.
        self.size = len(self._prefix.text) + len(self._body.text)

    def _columns(self, maxcol: int) -> urwid.Columns:
        if self._layout is None or self._layout[0] != maxcol:
            prefix = min(self._prefix_width, max(1, (maxcol - self._time_width) // 2 - 1))
            parts: list[Any] = [(prefix, self._prefix), self._body]
            if self._time is not None:
                parts.insert(0, (self._time_width, self._time))
            self._layout = (maxcol, urwid.Columns(parts, dividechars=1))
        return self._layout[1]

    def rows(self, size: tuple[int], focus: bool = False) -> int:
        return self._columns(size[0]).rows(size, focus)

    def render(
        self, size: tuple[()] | tuple[int] | tuple[int, int], focus: bool = False
    ) -> urwid.Canvas:
        assert len(size) == 1, "a flow widget"
        return self._columns(size[0]).render(size, focus)


class ChatApp:
    """The urwid front end of a :class:`ChatSession`."""

    def __init__(self, config: ClientConfig) -> None:
        self.walker: urwid.SimpleFocusListWalker[Entry] = urwid.SimpleFocusListWalker([])
        self.pane = urwid.ListBox(self.walker)
        self.status_text = urwid.Text("", wrap="ellipsis")  # always one line
        self.status_bar = urwid.AttrMap(self.status_text, "status")
        self.input = urwid.Edit(("caption", "> "))
        self.frame = ChatFrame(
            self.pane, footer=urwid.Pile([self.status_bar, self.input]), focus_part="footer"
        )
        self.session = ChatSession(config, self)
        self._pane_chars = 0
        self.quitting = False
        self._state: State | None = None
        self._name_wanted: trio.Event | None = None
        self._chosen = ""
        self.status(self.session.status)

    # ------------------------------------------------------------ Frontend for the session

    def message(self, message: dict[str, Any]) -> None:
        rendered = self.render(message)
        if rendered is not None:
            when, prefix, body = rendered
            self.add(prefix, body, when)

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
        self.status_text.set_text(clean("  |  ".join(parts)))
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

    def render(self, message: dict[str, Any]) -> tuple[str, Markup, Markup] | None:
        """(local time, prefix, body) urwid markup for a server message; None for the
        ones not shown.

        Replayed history is dimmed, notices are dimmed, your own messages are marked
        ``>`` and every name has its own colour. The prefix (the mark and the name, or a
        notice's ``--``) has a column of its own, so every further line of the body
        (a newline in the message, or wrapping) is indented under its first.
        """
        kind = message.get("type")
        when = local_time(message.get("timestamp"))
        earlier = message.get("history") is True
        if kind == "chat":
            user = clean(str(message.get("user", "?")))
            text = clean(str(message.get("text", "")), newlines=True)
            if earlier:
                return when, ("history", f"  {user}:"), ("history", text)
            own = self.session.name is not None and user.casefold() == self.session.name.casefold()
            mark = ("me", "> ") if own else "  "
            return when, [mark, (user_attr(user), user), ":"], text
        if kind == "system":
            attr = "history" if earlier else "notice"
            return when, (attr, NOTICE), (attr, clean(str(message.get("text", ""))))
        if kind == "welcome":
            you = clean(str(message.get("user")))
            return when, ("notice", NOTICE), ("notice", f"you are {you}; {user_list(message)}")
        if kind == "users":
            return when, ("notice", NOTICE), ("notice", user_list(message))
        if kind == "error":
            text = clean(str(message.get("text", message.get("code"))))
            return when, ("error", "  !!"), ("error", text)
        return None

    def add(self, prefix: Markup, body: Markup, when: str | None = None) -> None:
        """Append an entry; follow it if the pane was showing the newest one."""
        walker = self.walker
        at_bottom = not walker or self.pane.focus_position == len(walker) - 1
        entry = Entry(when, prefix, body)
        walker.append(entry)
        self._pane_chars += entry.size
        drop = max(0, len(walker) - MAX_LINES)
        chars = self._pane_chars - sum(line.size for line in walker[:drop])
        while drop < len(walker) - 1 and chars > MAX_PANE_CHARS:
            chars -= walker[drop].size
            drop += 1
        if drop:
            del walker[:drop]
        self._pane_chars = chars
        if at_bottom:
            self.pane.set_focus(len(walker) - 1)

    def notice(self, text: str, attr: str = "notice") -> None:
        """A line of the client's own (it may quote the server: cleaned too)."""
        self.add((attr, " "), (attr, clean(text)))

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
