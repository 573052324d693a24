"""Interactive mode: a full-screen chat on urwid's ``TrioEventLoop``.

A message pane (scrolls with PgUp/PgDn, keeps at most ``MAX_LINES``; "N new below" on
the status line while scrolled up), a status line that never loses its row, and an
input area (:mod:`.compose`: readline keys, pastes in one piece, at most a few rows)
that incoming messages never clobber: urwid redraws the whole screen, so a message
arriving while you type lands in the pane above your input. A message you send shows
at the bottom as *pending* (dimmed) until the server echoes it, also while offline; a
message longer than the server's ``max_text`` is not sent and stays in the input.
All I/O runs as Trio tasks in one thread; urwid's loop is one of them.
"""

from __future__ import annotations

import logging
import signal
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

import trio
import urwid

from .. import protocol
from ..protocol.moderation import moderation_from_command, moderation_message
from .compose import INPUT_MAX, ChatInput, InputArea, Key, PasteCoalescer
from .config import ClientConfig
from .display import AfterReplay, clean, local_time, user_list
from .session import ChatSession, State, Status
from .transport import ClientError

Markup = Any  # urwid text markup: a string, (attribute, markup), or a list of them

#: Lines kept in the message pane; older ones are dropped ...
MAX_LINES = 5000
#: ... and characters: a server sending long messages cannot make the pane hold more.
MAX_PANE_CHARS = 4_000_000
#: The prefix of a notice: a chat's prefix is a name, never this.
NOTICE = "  --"
#: Rows the input area may take at most (fewer on a short screen: see input_rows).
MAX_INPUT_ROWS = 6
#: In the time column of a message sent and not yet echoed (as wide as ``HH:MM:SS``).
PENDING = "pending "

HELP = (
    "commands: /who (who is online), /nick NEW (change name), /quit (or Ctrl-C, "
    "Ctrl-D on an empty line), /help; ops and admins: /kick, /ban, /unban, /bans, "
    "/mute, /unmute, /op, /deop, /voice, /devoice, /mode (as at nc); //text sends a line "
    "starting with '/'; PgUp/PgDn "
    "scroll; Ctrl-A/Ctrl-E start/end, Ctrl-U/Ctrl-K delete to start/end, Ctrl-W the word "
    "before, Ctrl-Y puts it back, Ctrl-_ undoes"
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
    ("status warn", "white,bold", "dark red"),
    ("pending", "dark gray", "default"),
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


def input_rows(screen_rows: int) -> int:
    """Rows the input area may take on a screen this high: at most MAX_INPUT_ROWS and
    at most about half of what the status line leaves, so the pane keeps some rows."""
    return max(1, min(MAX_INPUT_ROWS, (screen_rows - 2) // 2))


class ChatFrame(urwid.Frame["urwid.ListBox[int]", None, urwid.Pile]):
    """Keys go to the input area, except the ones that scroll the message pane; the
    input area's height is capped for the screen's before every use."""

    def __init__(
        self,
        body: urwid.ListBox[int],
        footer: urwid.Pile,
        area: InputArea,
        on_scroll: Callable[[], object],
    ) -> None:
        super().__init__(body, footer=footer, focus_part="footer")
        self.area = area
        self.on_scroll = on_scroll

    def keypress(self, size: tuple[int, int], key: str) -> str | None:  # type: ignore[override]
        self.area.max_rows = input_rows(size[1])
        if key in ("page up", "page down"):
            maxcol, maxrow = size
            (top, bottom), _ = self.frame_top_bottom(size, True)
            rows = max(1, maxrow - top - bottom)
            unhandled = self.body.keypress((maxcol, rows), key)
            self.on_scroll()
            return unhandled
        return super().keypress(size, key)

    def render(  # type: ignore[override]
        self, size: tuple[int, int], focus: bool = False
    ) -> urwid.Canvas:
        self.area.max_rows = input_rows(size[1])
        return super().render(size, focus)


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
        #: Right of the status: "N new below" while scrolled up, the input's length
        #: near or over the limit.
        self.status_note = urwid.Text("", wrap="clip")
        self.status_bar = urwid.AttrMap(
            urwid.Columns([self.status_text, (urwid.PACK, self.status_note)]), "status"
        )
        self.input = ChatInput(("caption", "> "))
        urwid.connect_signal(self.input, "postchange", lambda *_: self._show_note())
        self.input_area = InputArea(self.input)
        self.frame = ChatFrame(
            self.pane, urwid.Pile([self.status_bar, self.input_area]), self.input_area,
            self._scrolled,
        )
        self.session = ChatSession(config, self)
        self._pane_chars = 0
        self.quitting = False
        #: The longest text the server takes (``welcome.max_text``; the protocol's
        #: default until a server says).
        self.max_text = protocol.MAX_TEXT
        #: Sent chats not yet echoed: (text, its entry at the bottom of the pane, the
        #: newest id seen when it was sent: a replayed echo comes after that).
        self._pending: deque[tuple[str, Entry, int | None]] = deque()
        self._own_names = {config.name.casefold()} if config.name else set()
        self._unseen = 0  # entries added below the view while scrolled up
        self._order = AfterReplay()
        self._state: State | None = None
        self._name_wanted: trio.Event | None = None
        self._chosen = ""
        self._password_wanted: trio.Event | None = None
        self._password = ""
        self.status(self.session.status)

    def coalescer(self, process: Callable[[list[Key]], object]) -> PasteCoalescer:
        """The main loop's input filter (``process``: its ``process_input``): pastes
        go into the input in one piece."""
        return PasteCoalescer(self.input, process, self._cut)

    def _cut(self, dropped: int) -> None:
        self.notice(
            f"!! {dropped:,} pasted characters did not fit: the input holds {INPUT_MAX:,}",
            "error",
        )

    # ------------------------------------------------------------ Frontend for the session

    def message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "welcome":
            limit = message.get("max_text")
            if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
                self.max_text = limit
            if isinstance(message.get("user"), str):
                self._own_names.add(message["user"].casefold())
            self._show_note()
        elif kind == "chat" and str(message.get("user")).casefold() in self._own_names:
            self._confirm(message)
        elif kind == "error" and message.get("code") == protocol.TOO_LONG and self._pending:
            # A server that did not say its limit (or lowered it): the text comes back.
            text = self._fail_first("not sent: too long for the server")
            if not self.input.edit_text:
                self.input.set_edit_text(text)
                self.input.set_edit_pos(len(text))
        for shown in self._order.feed(message):  # "you are ..." after the replay
            rendered = self.render(shown)
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

    async def ask_password(self, name: str, reason: str) -> str | None:
        """Ask on the input line, masked; an empty answer chooses another name."""
        self.notice(f"{reason}; type the password of {name} (empty: choose another name)")
        self.input.set_caption(("caption", "password: "))
        self.input.set_mask("*")
        self.input.set_edit_text("")
        self._password_wanted = trio.Event()
        try:
            await self._password_wanted.wait()
        finally:
            self._password_wanted = None
            self.input.set_mask(None)
            self.input.set_caption(("caption", "> "))
        password, self._password = self._password, ""
        return password or None

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
        """Add an entry above the pending ones; follow it if the pane was showing the
        newest one, else count it for "N new below"."""
        at_bottom = self._at_bottom()
        walker = self.walker
        entry = Entry(when, prefix, body)
        walker.insert(len(walker) - len(self._pending), entry)
        self._pane_chars += entry.size
        kept = len(walker) - len(self._pending) - 1  # the pending and the newest stay
        drop = min(max(0, len(walker) - MAX_LINES), kept)
        chars = self._pane_chars - sum(line.size for line in walker[:drop])
        while drop < kept and chars > MAX_PANE_CHARS:
            chars -= walker[drop].size
            drop += 1
        if drop:
            del walker[:drop]
        self._pane_chars = chars
        if at_bottom:
            self.pane.set_focus(len(walker) - 1)
        else:
            self._unseen += 1
            self._show_note()

    def _at_bottom(self) -> bool:
        """The pane shows the newest message (its focus is on the last message or on a
        pending entry below it)."""
        walker = self.walker
        last = len(walker) - len(self._pending) - 1
        return last < 0 or self.pane.focus_position >= last

    def _scrolled(self) -> None:
        if self._unseen and self._at_bottom():
            self._unseen = 0
            self._show_note()

    def _show_note(self) -> None:
        """The right of the status line: new entries below the view, and the input's
        length once it nears the server's limit."""
        parts: list[Any] = []
        if self._unseen:
            parts.append(f" {self._unseen} new below (PgDn) ")
        length = len(self._chat_text(self.input.edit_text))
        if self._name_wanted is None and length > self.max_text:
            parts.append(("status warn", f" {length:,}/{self.max_text:,}: too long to send "))
        elif self._name_wanted is None and length > self.max_text * 9 // 10:
            parts.append(f" {length:,}/{self.max_text:,} ")
        self.status_note.set_text(parts or "")

    @staticmethod
    def _chat_text(line: str) -> str:
        """What a line in the input sends as chat text (``//`` stands for ``/``)."""
        return line[1:] if line.startswith("//") else line

    # ------------------------------------------------------------ pending messages

    def _add_pending(self, text: str) -> None:
        """Show a chat just sent at the bottom, dimmed, until the server echoes it."""
        you = clean(self.session.name or "?")
        entry = Entry(
            PENDING, ("pending", f"> {you}:"), ("pending", clean(text, newlines=True))
        )
        self._pending.append((text, entry, self.session.last_id))
        self.walker.append(entry)
        self._pane_chars += entry.size
        self.pane.set_focus(len(self.walker) - 1)  # sending shows the newest again
        self._scrolled()

    def _take_pending(self) -> str:
        """Remove the oldest pending entry from the pane; its text."""
        first = len(self.walker) - len(self._pending)
        text, entry, _ = self._pending.popleft()
        if 0 <= first < len(self.walker) and self.walker[first] is entry:
            del self.walker[first]
            self._pane_chars -= entry.size
        return text

    def _confirm(self, message: dict[str, Any]) -> None:
        """Our chat came back from the server: its pending entry goes (the message is
        then shown as usual). Pending ones before it never will (per-sender order):
        they are marked as not sent. A replayed chat (after a reconnect) is the echo
        only if it is newer than what we had seen when we sent it."""
        text = message.get("text")
        msg_id = message.get("id")
        replayed = message.get("history") is True
        for index, (pending, _, after) in enumerate(self._pending):
            if replayed and not (isinstance(msg_id, int) and after is not None and msg_id > after):
                continue
            if pending == text:
                for _ in range(index):
                    self._fail_first("not sent")
                self._take_pending()
                return

    def _fail_first(self, why: str) -> str:
        """Turn the oldest pending entry into a notice that it was not sent; its text."""
        text = self._take_pending()
        self.notice(f"!! {why}: {text[:60]}", "error")
        return text

    def notice(self, text: str, attr: str = "notice") -> None:
        """A line of the client's own (it may quote the server: cleaned too)."""
        self.add((attr, " "), (attr, clean(text)))

    # ------------------------------------------------------------ keys

    def on_key(self, key: str | tuple[Any, ...]) -> bool | None:
        """Keys the input area did not use (urwid's ``unhandled_input``)."""
        if key == "enter":
            if self.submit(self.input.edit_text):
                self.input.set_edit_text("")
            return True
        if key == "ctrl c" or (key == "ctrl d" and not self.input.edit_text):
            self.quit()
            return True
        return None

    def submit(self, line: str) -> bool:
        """Act on the input; False when it stays in the input (refused, not sent)."""
        if self._password_wanted is not None:
            self._password = line
            self._password_wanted.set()
            return True
        if self._name_wanted is not None:
            try:
                self._chosen = protocol.validate_name(line)
            except protocol.ProtocolError as exc:
                self.notice(exc.text, "error")
                return True
            self._name_wanted.set()
            return True
        if not line.strip():
            return True
        if line.startswith("/") and not line.startswith("//"):
            self.command(line)
            return True
        text = self._chat_text(line)
        if len(text) > self.max_text:
            self.notice(
                f"!! not sent: {len(text):,} characters, and the server takes at most "
                f"{self.max_text:,}; shorten it (Ctrl-U clears the line)",
                "error",
            )
            return False
        if not self.send({"type": "chat", "text": text}):
            return False
        self._add_pending(text)
        return True

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
            try:
                moderation = moderation_from_command(command, arg)
            except protocol.ProtocolError as exc:
                self.notice(exc.text, "error")
                return
            if moderation is None:
                self.notice(f"unknown command {command[:32]}; try /help", "error")
                return
            self.send(moderation_message(moderation))  # this client is in #lobby

    def send(self, message: dict[str, Any]) -> bool:
        if not self.session.send_nowait(message):
            self.notice("too many unsent messages; wait for the connection", "error")
            return False
        return True

    def quit(self) -> None:
        """Leave politely when connected (after what is queued); otherwise, or on a
        second request, end at once."""
        if self._name_wanted is not None or self._password_wanted is not None:
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
    # Bracketed paste on without waiting for the terminal to confirm it (tmux does not
    # answer the query): a terminal without it ignores the request, and one with it
    # marks pastes, so a pasted line break stays in the message instead of sending.
    screen = urwid.display.raw.Screen(bracketed_paste_mode=True)
    loop = urwid.MainLoop(
        app.frame,
        PALETTE,
        screen=screen,
        event_loop=event_loop,
        unhandled_input=app.on_key,
        input_filter=app.coalescer(lambda keys: loop.process_input(keys)),
        handle_mouse=False,
    )
    error: ClientError | None = None
    with loop.start():
        # Ctrl-C (and Ctrl-\) arrive as keys, so /quit, Ctrl-C and Ctrl-D behave alike.
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
