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
from .display import AfterReplay, clean, local_time, room_list, user_list
from .rooms import LOBBY, MAX_CONVERSATIONS, MAX_ROOMS, ROOM_RULE, parse_room, room_key
from .session import ChatSession, State, Status
from .transport import ClientError

Markup = Any  # urwid text markup: a string, (attribute, markup), or a list of them

#: Lines kept in each conversation's pane; older ones are dropped ...
MAX_LINES = 5000
#: ... and characters: a server sending long messages cannot make a pane hold more
#: (and there are at most MAX_CONVERSATIONS panes).
MAX_PANE_CHARS = 512_000
#: The prefix of a notice: a chat's prefix is a name, never this.
NOTICE = "  --"
#: Rows the input area may take at most (fewer on a short screen: see input_rows).
MAX_INPUT_ROWS = 6
#: In the time column of a message sent and not yet echoed (as wide as ``HH:MM:SS``).
PENDING = "pending "

HELP = (
    "commands: /join #room (enter a room, or switch to one you are in), /part [#room] "
    "(leave it; in a direct conversation: close it), /msg NAME text (a direct message, "
    "in its own @NAME conversation; /msg \"Ann Lee\" text for a name with spaces), "
    "/rooms (list them), /who [#room] (who is in it), /topic text (set the room's topic), "
    "/nick NEW (change name), /quit (or Ctrl-C, Ctrl-D on an empty line), /help; ops and "
    "admins: /kick, /ban, /unban, /bans, /mute, /unmute, /op, /deop, /voice, /devoice, "
    "/mode (as at nc; in the room shown unless a #room comes first); //text "
    "sends a line starting with '/'; Alt-Right/Ctrl-N next conversation, Alt-Left/Ctrl-P "
    "the previous one; PgUp/PgDn scroll; Ctrl-A/Ctrl-E start/end, Ctrl-U/Ctrl-K delete to "
    "start/end, Ctrl-W the word before, Ctrl-Y puts it back, Ctrl-_ undoes"
)
#: Keys that show the next and the previous conversation.
NEXT_KEYS = frozenset({"meta right", "ctrl n"})
PREVIOUS_KEYS = frozenset({"meta left", "ctrl p"})
#: Columns of the room list (once there are two conversations).
ROOM_LIST_WIDTH = 18

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


class ChatFrame(urwid.Frame[Any, Any, urwid.Pile]):
    """Keys go to the input area, except the ones that scroll the message pane; the
    input area's height is capped for the screen's before every use."""

    def __init__(
        self,
        body: urwid.Widget,
        footer: urwid.Pile,
        area: InputArea,
        on_scroll: Callable[[], object],
    ) -> None:
        super().__init__(body, footer=footer, focus_part="footer")
        self.area = area
        self.on_scroll = on_scroll
        #: The message pane inside the body (beside the room list, under the title).
        self.pane: urwid.ListBox[int] | None = None

    def keypress(self, size: tuple[int, int], key: str) -> str | None:  # type: ignore[override]
        self.area.max_rows = input_rows(size[1])
        if key in ("page up", "page down"):
            maxcol, maxrow = size
            (top, bottom), _ = self.frame_top_bottom(size, True)
            rows = max(1, maxrow - top - bottom)
            pane = self.pane if self.pane is not None else self.body
            unhandled = pane.keypress((maxcol, rows), key)
            self.on_scroll()
            return str(unhandled) if unhandled is not None else None
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


class Conversation:
    """One room or one direct conversation (``@Bob``): its own pane (a list of entries,
    its scroll position), its sent-not-echoed messages, and what the room list shows."""

    def __init__(self, key: str, name: str, *, room: str | None = None,
                 peer: str | None = None) -> None:
        self.key = key
        #: As shown in the list: ``#dev`` or ``@Bob``.
        self.name = name
        self.room = room
        self.peer = peer
        self.walker: urwid.SimpleFocusListWalker[Entry] = urwid.SimpleFocusListWalker([])
        self.pane = urwid.ListBox(self.walker)
        #: Sent chats not yet echoed: (text, its entry at the bottom of the pane, the
        #: newest id seen when it was sent: a replayed echo comes after that).
        self.pending: deque[tuple[str, Entry, int | None]] = deque()
        self.chars = 0
        self.unseen = 0  # entries added below the view while scrolled up
        self.unread = 0  # chats that came while another conversation was shown
        self.topic = ""
        self.online: int | None = None
        self.active = 0  # when it last had a message (a counter): the idlest DM goes
        #: Its entry in the room list, and what that shows (current, unread, left, name).
        self.item = urwid.Text("", wrap="ellipsis")
        self.label: tuple[bool, int, bool, str] | None = None


def dm_key(name: str) -> str:
    return "@" + name.casefold()


class ChatApp:
    """The urwid front end of a :class:`ChatSession`: a pane per conversation (each
    room, each direct conversation), a room list with unread counts beside it once
    there is more than one, and the current one's name and topic above it."""

    def __init__(self, config: ClientConfig) -> None:
        self.status_text = urwid.Text("", wrap="ellipsis")  # always one line
        #: Right of the status: "N new below" while scrolled up, the input's length
        #: near or over the limit.
        self.status_note = urwid.Text("", wrap="clip")
        self.status_bar = urwid.AttrMap(
            urwid.Columns([self.status_text, (urwid.PACK, self.status_note)]), "status"
        )
        self.title = urwid.Text("", wrap="ellipsis")
        self.room_list = urwid.SimpleFocusListWalker[urwid.Text]([])
        self.room_pane = urwid.ListBox(self.room_list)
        self.input = ChatInput(("caption", "> "))
        urwid.connect_signal(self.input, "postchange", lambda *_: self._show_note())
        self.input_area = InputArea(self.input)
        first = config.rooms[0] if config.rooms else LOBBY
        self.conversations: dict[str, Conversation] = {}
        self._clock = 0  # orders conversations by their last message: the idlest goes
        #: What the list, the title and the body last showed (see _layout).
        self._listed: list[Conversation] = []
        self._title_shown: object = None
        self._shape: object = None
        self.current = self._conversation_for_room(first)
        self.frame = ChatFrame(
            self.current.pane, urwid.Pile([self.status_bar, self.input_area]),
            self.input_area, self._scrolled,
        )
        self.frame.pane = self.current.pane
        self.session = ChatSession(config, self)
        self.quitting = False
        #: The longest text the server takes (``welcome.max_text``; the protocol's
        #: default until a server says).
        self.max_text = protocol.MAX_TEXT
        self._own_names = {config.name.casefold()} if config.name else set()
        self._order = AfterReplay()
        self._state: State | None = None
        self._status: Status | None = None
        self._name_wanted: trio.Event | None = None
        self._chosen = ""
        self._password_wanted: trio.Event | None = None
        self._password = ""
        #: A room asked for with /join: shown once its welcome comes.
        self._switch_to: str | None = None
        self.status(self.session.status)

    # ------------------------------------------------------------ conversations

    @property
    def walker(self) -> urwid.SimpleFocusListWalker[Entry]:
        """The current conversation's entries."""
        return self.current.walker

    @property
    def pane(self) -> urwid.ListBox[int]:
        return self.current.pane

    def _conversation_for_room(self, room: str) -> Conversation:
        key = room_key(room)
        found = self.conversations.get(key)
        if found is None:
            found = self.conversations[key] = Conversation(key, room, room=room)
            self._clock += 1
            found.active = self._clock
            self._trim_conversations()
        return found

    def _conversation_with(self, peer: str) -> Conversation:
        key = dm_key(peer)
        found = self.conversations.get(key)
        if found is None:
            found = self.conversations[key] = Conversation(key, "@" + peer, peer=peer)
            self._clock += 1
            found.active = self._clock  # the newest: never the one that goes
            self._trim_conversations()
        return found

    def _trim_conversations(self) -> None:
        """At most MAX_CONVERSATIONS: the direct (then room) conversation idle longest
        goes, never the one shown, nor a room we are in."""
        while len(self.conversations) > MAX_CONVERSATIONS:
            candidates = [
                c for c in self.conversations.values()
                if c is not getattr(self, "current", None)
                and not (c.room is not None and self._in(c.room))
            ]
            if not candidates:
                return
            gone = min(candidates, key=lambda c: (c.room is not None, c.active))
            del self.conversations[gone.key]

    def _in(self, room: str) -> bool:
        session = getattr(self, "session", None)
        return session is not None and session.in_room(room)

    def switch(self, conversation: Conversation) -> None:
        """Show ``conversation``: its pane, its title; its unread count is cleared."""
        self.current = conversation
        conversation.unread = 0
        self.frame.pane = conversation.pane
        self._layout()
        if self._status is not None:
            self.status(self._status)
        self._show_note()

    def _cycle(self, step: int) -> None:
        order = list(self.conversations.values())
        if len(order) > 1:
            index = order.index(self.current)
            self.switch(order[(index + step) % len(order)])

    def _layout(self) -> None:
        """The body: the pane under a title line (the conversation and its topic), with
        the room list at its left once there are two conversations or more (with one,
        and no topic, the pane alone: the status line names the room).

        Called after every message, so it changes only what changed: an entry's text
        in the list (its unread count), the list when a conversation came or went, the
        widgets around the pane when another one shows."""
        current = self.current
        title: list[Any] = [("caption", f" {clean(current.name)}")]
        if current.topic:
            title.append(("notice", f"  {clean(current.topic)}"))
        if title != self._title_shown:
            self._title_shown = title
            self.title.set_text(title)
        conversations = list(self.conversations.values())
        if [id(c) for c in conversations] != [id(c) for c in self._listed]:
            self._listed = conversations
            self.room_list[:] = [c.item for c in conversations]
        for conversation in conversations:
            gone = conversation.room is not None and not self._in(conversation.room)
            state = (conversation is current, conversation.unread, gone, conversation.name)
            if state == conversation.label:
                continue
            conversation.label = state
            mark = ">" if conversation is current else " "
            unread = f" ({conversation.unread})" if conversation.unread else ""
            attr = "history" if gone else "me" if conversation is current else (
                "caption" if conversation.unread else "notice"
            )
            conversation.item.set_text((attr, f"{mark}{clean(conversation.name)}{unread}"))
        several = len(conversations) > 1
        # One room and no topic: the status line names it, the pane keeps every row.
        shape = (current.key, several, several or bool(current.topic))
        if shape == self._shape:
            return
        self._shape = shape
        header = self.title if shape[2] else None
        body: urwid.Widget = urwid.Frame(current.pane, header=header)
        if several:
            body = urwid.Columns(
                [(ROOM_LIST_WIDTH, self.room_pane), body], dividechars=1, focus_column=1
            )
        self.frame.body = body

    def _own(self, message: dict[str, Any]) -> bool:
        """A chat or direct message we sent (its echo)."""
        sender = message.get("user" if message.get("type") == "chat" else "from")
        return str(sender).casefold() in self._own_names

    def _route(self, message: dict[str, Any]) -> Conversation:
        """The conversation a server message belongs in."""
        kind = message.get("type")
        if kind == "msg":
            sender, to = str(message.get("from")), str(message.get("to"))
            peer = to if sender.casefold() in self._own_names else sender
            found = self._conversation_with(peer)
            found.peer, found.name = peer, "@" + peer  # as the server spells it
            return found
        room = message.get("room")
        if kind in ("chat", "system", "welcome", "history_end") or (
            kind == "users" and isinstance(room, str) and room_key(room) in self.conversations
        ):
            if kind == "system" and room is None and message.get("event") == "shutdown":
                return self.current
            return self._conversation_for_room(room if isinstance(room, str) else LOBBY)
        return self.current

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
        conversation = self._route(message)
        if kind == "welcome":
            limit = message.get("max_text")
            if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
                self.max_text = limit
            if isinstance(message.get("user"), str):
                self._own_names.add(message["user"].casefold())
            conversation.topic = str(message.get("topic", conversation.topic))
            if self._switch_to == conversation.key:
                self._switch_to = None
                self.switch(conversation)
            self._show_note()
        elif kind in ("chat", "msg") and self._own(message):
            self._confirm(conversation, message)
        elif kind == "error" and message.get("code") == protocol.TOO_LONG and self.current.pending:
            # A server that did not say its limit (or lowered it): the text comes back.
            text = self._fail_first(self.current, "not sent: too long for the server")
            if not self.input.edit_text:
                self.input.set_edit_text(text)
                self.input.set_edit_pos(len(text))
        elif kind == "error" and message.get("code") == "no_such_user":
            for waiting in self.conversations.values():
                if waiting.peer is not None and waiting.pending:
                    self._fail_first(waiting, "not sent")
                    conversation = waiting
                    break
        elif kind == "system" and message.get("event") == "topic":
            conversation.topic = str(message.get("topic", conversation.topic))
        count = message.get("clients_count")
        if isinstance(count, int) and kind in ("welcome", "system", "users") and (
            conversation.room is not None
        ):
            conversation.online = count
        if kind in ("chat", "msg") and message.get("history") is not True:
            self._clock += 1
            conversation.active = self._clock
            if conversation is not self.current:
                conversation.unread += 1
        for shown in self._order.feed(message):  # "you are ..." after the replay
            rendered = self.render(shown)
            if rendered is not None:
                when, prefix, body = rendered
                target = conversation if shown is message else self._route(shown)
                self.add(prefix, body, when, target)
        if kind == "system" and message.get("event") == "leave" and conversation.room and (
            not self._in(conversation.room)
        ):
            self._left(conversation)
        self._layout()

    def _left(self, conversation: Conversation) -> None:
        """We left a room (our ``part``): its conversation goes from the list; shown,
        another one shows instead (the pane says which was left)."""
        if len(self.conversations) < 2:
            return  # the last one stays: notices need somewhere to go
        if conversation is self.current:
            self._cycle(-1)
        del self.conversations[conversation.key]
        self.notice(f"-- you left {conversation.name}")

    def status(self, status: Status) -> None:
        self._status = status
        previous, self._state = self._state, status.state
        if previous is State.CONNECTED and status.state is State.RECONNECTING:
            self.notice(f"-- {status.reason}; reconnecting", "error")
        elif previous is State.RECONNECTING and status.state is State.CONNECTED:
            self.notice(f"-- reconnected to {status.address}")
        parts = [f" {status.address}"]
        bad = status.state is not State.CONNECTED
        if status.state is State.CONNECTED:
            parts.append(f"connected as {status.name}")
            online = self.current.online if self.current.room is not None else None
            if online is not None:
                parts.append(f"{online} online in {self.current.name}")
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
        if kind in ("chat", "msg"):
            user = clean(str(message.get("user" if kind == "chat" else "from", "?")))
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
        if kind == "rooms":
            return when, ("notice", NOTICE), ("notice", room_list(message))
        if kind == "error":
            text = clean(str(message.get("text", message.get("code"))))
            return when, ("error", "  !!"), ("error", text)
        return None

    def add(
        self, prefix: Markup, body: Markup, when: str | None = None,
        conversation: Conversation | None = None,
    ) -> None:
        """Add an entry to a conversation (the current one by default) above its
        pending ones; follow it if its pane was showing the newest one, else count it
        for "N new below"."""
        conv = conversation or self.current
        at_bottom = self._at_bottom(conv)
        walker = conv.walker
        entry = Entry(when, prefix, body)
        walker.insert(len(walker) - len(conv.pending), entry)
        conv.chars += entry.size
        kept = len(walker) - len(conv.pending) - 1  # the pending and the newest stay
        drop = min(max(0, len(walker) - MAX_LINES), kept)
        chars = conv.chars - sum(line.size for line in walker[:drop])
        while drop < kept and chars > MAX_PANE_CHARS:
            chars -= walker[drop].size
            drop += 1
        if drop:
            del walker[:drop]
        conv.chars = chars
        if at_bottom:
            conv.pane.set_focus(len(walker) - 1)
        else:
            conv.unseen += 1
            self._show_note()

    def _at_bottom(self, conv: Conversation | None = None) -> bool:
        """The pane shows the newest message (its focus is on the last message or on a
        pending entry below it)."""
        conv = conv or self.current
        last = len(conv.walker) - len(conv.pending) - 1
        return last < 0 or conv.pane.focus_position >= last

    def _scrolled(self) -> None:
        if self.current.unseen and self._at_bottom():
            self.current.unseen = 0
            self._show_note()

    def _show_note(self) -> None:
        """The right of the status line: new entries below the view, and the input's
        length once it nears the server's limit."""
        parts: list[Any] = []
        if self.current.unseen:
            parts.append(f" {self.current.unseen} new below (PgDn) ")
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
        conv = self.current
        you = clean(self.session.name or "?")
        entry = Entry(
            PENDING, ("pending", f"> {you}:"), ("pending", clean(text, newlines=True))
        )
        conv.pending.append((text, entry, self.session.last_id))
        conv.walker.append(entry)
        conv.chars += entry.size
        conv.pane.set_focus(len(conv.walker) - 1)  # sending shows the newest again
        self._scrolled()

    def _take_pending(self, conv: Conversation) -> str:
        """Remove the oldest pending entry from the pane; its text."""
        first = len(conv.walker) - len(conv.pending)
        text, entry, _ = conv.pending.popleft()
        if 0 <= first < len(conv.walker) and conv.walker[first] is entry:
            del conv.walker[first]
            conv.chars -= entry.size
        return text

    def _confirm(self, conv: Conversation, message: dict[str, Any]) -> None:
        """Our chat came back from the server: its pending entry goes (the message is
        then shown as usual). Pending ones before it never will (per-sender order):
        they are marked as not sent. A replayed chat (after a reconnect) is the echo
        only if it is newer than what we had seen when we sent it."""
        text = message.get("text")
        msg_id = message.get("id")
        replayed = message.get("history") is True
        for index, (pending, _, after) in enumerate(conv.pending):
            if replayed and not (isinstance(msg_id, int) and after is not None and msg_id > after):
                continue
            if pending == text:
                for _ in range(index):
                    self._fail_first(conv, "not sent")
                self._take_pending(conv)
                return

    def _fail_first(self, conv: Conversation, why: str) -> str:
        """Turn the oldest pending entry into a notice that it was not sent; its text."""
        text = self._take_pending(conv)
        self.add(("error", " "), ("error", clean(f"!! {why}: {text[:60]}")), None, conv)
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
        if key in NEXT_KEYS or key in PREVIOUS_KEYS:
            self._cycle(1 if key in NEXT_KEYS else -1)
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
        return self.say(self._chat_text(line))

    def say(self, text: str) -> bool:
        """Send ``text`` to the current conversation; False if it stays in the input."""
        if len(text) > self.max_text:
            self.notice(
                f"!! not sent: {len(text):,} characters, and the server takes at most "
                f"{self.max_text:,}; shorten it (Ctrl-U clears the line)",
                "error",
            )
            return False
        conv = self.current
        message: dict[str, Any]
        if conv.peer is not None:
            message = {"type": "msg", "to": conv.peer, "text": text}
        elif conv.room is not None and self._in(conv.room):
            message = {"type": "chat", "room": conv.room, "text": text}
        elif conv.room is not None and self.session.state is State.CONNECTED:
            self.notice(f"you are not in {conv.name}: /join {conv.name} to enter it", "error")
            return False
        else:  # not joined yet (or offline): sent to this room once we are in it
            message = {"type": "chat", "room": conv.room or LOBBY, "text": text}
        if not self.send(message):
            return False
        self._add_pending(text)
        return True

    def command(self, line: str) -> None:
        command, _, arg = line.strip().partition(" ")
        command, arg = command.lower(), arg.strip()
        room = self.current.room
        if command in ("/quit", "/exit"):
            self.quit()
        elif command == "/help":
            self.notice(HELP)
        elif command == "/who":
            target = parse_room(arg) if arg else room
            if arg and target is None:
                self.notice(f"usage: /who [#room] ({ROOM_RULE})", "error")
                return
            self.send({"type": "who", "room": target or LOBBY})
        elif command in ("/nick", "/name"):
            try:
                name = protocol.validate_name(arg)
            except protocol.ProtocolError as exc:
                self.notice(f"usage: /nick NEW ({exc.text})", "error")
                return
            self.send({"type": "join", "user": name})
        elif command == "/join":
            self._join(arg)
        elif command in ("/part", "/leave", "/close"):
            self._part(arg)
        elif command in ("/msg", "/query"):
            self._msg(arg)
        elif command in ("/rooms", "/list"):
            self.send({"type": "rooms"})
        elif command == "/topic":
            if room is None:
                self.notice("/topic sets a room's topic: switch to the room first", "error")
                return
            self.send({"type": "topic", "room": room, "topic": arg})
        else:
            try:
                moderation = moderation_from_command(command, arg)
            except protocol.ProtocolError as exc:
                self.notice(exc.text, "error")
                return
            if moderation is None:
                self.notice(f"unknown command {command[:32]}; try /help", "error")
                return
            # Its room: the one shown (#lobby in a direct conversation), unless named.
            self.send(moderation_message(moderation, room or LOBBY))

    def _join(self, arg: str) -> None:
        room = parse_room(arg)
        if room is None:
            self.notice(f"usage: /join #room ({ROOM_RULE})", "error")
            return
        key = room_key(room)
        if self._in(room) and key in self.conversations:
            self.switch(self.conversations[key])  # already in it: just show it
            return
        if len(self.session.rooms) >= MAX_ROOMS:
            self.notice(f"you are in {MAX_ROOMS} rooms: /part one first", "error")
            return
        if self.send({"type": "join", "room": room}):
            self._switch_to = key

    def _part(self, arg: str) -> None:
        if not arg and self.current.peer is not None:
            # A direct conversation has nothing to leave on the server: it closes.
            closing = self.current
            self._cycle(-1)
            if self.current is not closing:
                del self.conversations[closing.key]
                self._layout()
            return
        room = parse_room(arg) if arg else self.current.room
        if room is None:
            self.notice(f"usage: /part [#room] ({ROOM_RULE})", "error")
            return
        self.send({"type": "part", "room": room})

    def _msg(self, arg: str) -> None:
        """``/msg NAME text`` or ``/msg "Ann Lee" text``: a direct message, shown in
        its own conversation (``/msg NAME`` alone opens it)."""
        if arg.startswith('"'):
            name, quote, text = arg[1:].partition('"')
            if not quote:
                self.notice('usage: /msg "NAME WITH SPACES" text', "error")
                return
        else:
            name, _, text = arg.partition(" ")
        try:
            name = protocol.validate_name(name)
        except protocol.ProtocolError as exc:
            self.notice(f"usage: /msg NAME text ({exc.text})", "error")
            return
        self.switch(self._conversation_with(name))
        text = text.strip()
        if text:
            self.say(text)

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
