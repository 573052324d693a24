"""The interactive client's input area: what you type before it is sent.

Three things a plain ``urwid.Edit`` under a ``Frame`` gets wrong for a chat:

- **Pastes.** A terminal hands a paste over as typed keys, and urwid passes each key
  down the widget tree on its own; the ``Pile`` around the input measures the whole
  input for every key, so a paste of n characters cost O(n²) (10,000 characters: 14 s
  of a pegged CPU here). :class:`PasteCoalescer` takes each run of typed characters
  out of a batch of keys and inserts it with one call; bracketed pastes (terminals
  that mark them) keep their line breaks.
- **Height.** The input grows with its text, and a ``Frame`` gives its footer every
  row it asks for, the status line's included. :class:`InputArea` shows at most
  ``max_rows`` of it, scrolled to keep the cursor in view.
- **Editing keys.** :class:`ChatInput` binds readline's: Ctrl-A/E (start, end), Ctrl-U/K
  (delete to start, to end), Ctrl-W (the word before), Ctrl-Y (yank what they
  deleted), Alt-B/F, Ctrl-D (the character under the cursor), Ctrl-_ (undo).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Literal

import urwid

Key = str | tuple[str, int, int, int]

#: The most the input holds, in characters (a paste beyond it is cut, and said so).
INPUT_MAX = 65_536
#: Undo steps kept (each holds a copy of the text).
UNDO_STEPS = 20


class ChatInput(urwid.Edit):
    """A one-line edit with readline's keys. Enter is not its own: it goes up to the
    app, which sends; a bracketed paste's line breaks come in through :meth:`insert_text`."""

    _command_map = urwid.command_map.copy()
    _command_map.bind_readline()

    def __init__(self, caption: str | tuple[str, str]) -> None:
        super().__init__(
            caption, kill_buffer=deque(maxlen=16), undo_limit=UNDO_STEPS, max_length=INPUT_MAX
        )

    def room_left(self) -> int:
        """Characters that may still be inserted."""
        return INPUT_MAX - len(self.edit_text)


class InputArea(urwid.WidgetWrap[ChatInput]):
    """At most ``max_rows`` rows of the input, scrolled so the cursor stays in view.

    ``max_rows`` is set by the frame from the screen's height before each use, so the
    status line above never loses its row.
    """

    def __init__(self, edit: ChatInput, max_rows: int = 8) -> None:
        super().__init__(edit)
        self.edit = edit
        self.max_rows = max_rows
        self._top = 0  # first row of the edit shown

    def rows(self, size: tuple[int], focus: bool = False) -> int:
        return min(self.edit.rows(size, focus), max(1, self.max_rows))

    def _view_top(self, size: tuple[int], total: int) -> int:
        """The first row shown: moved only as far as keeps the cursor in view."""
        shown = max(1, self.max_rows)
        cursor = self.edit.get_cursor_coords(size)
        row = cursor[1] if cursor is not None else total - 1
        top = min(self._top, max(0, total - shown))
        if row < top:
            top = row
        elif row >= top + shown:
            top = row - shown + 1
        self._top = top
        return top

    def render(  # type: ignore[override]
        self, size: tuple[int], focus: bool = False
    ) -> urwid.Canvas:
        canvas = self.edit.render(size, focus)
        total = canvas.rows()
        shown = max(1, self.max_rows)
        if total <= shown:
            self._top = 0
            return canvas
        trimmed = urwid.CompositeCanvas(canvas)
        trimmed.trim(self._view_top(size, total), shown)
        return trimmed

    def get_cursor_coords(self, size: tuple[int]) -> tuple[int, int] | None:
        coords = self.edit.get_cursor_coords(size)
        if coords is None:
            return None
        col, row = coords
        return col, row - self._top

    def move_cursor_to_coords(
        self, size: tuple[int], col: int | Literal[urwid.Align.LEFT, urwid.Align.RIGHT], row: int
    ) -> bool:
        return self.edit.move_cursor_to_coords(size, col, row + self._top)


class PasteCoalescer:
    """``MainLoop``'s ``input_filter``: typed characters go into ``edit`` in runs.

    Keys are handled in the order they came: each run of characters the edit would
    take one by one is inserted with one :meth:`~urwid.Edit.insert_text` (so the
    widget tree measures the input once per run, not once per key), and every other
    key goes through ``process`` (``MainLoop.process_input``) on its own, in its place.
    Between ``begin paste`` and ``end paste`` (bracketed paste), Enter and Tab are part
    of the text. ``on_cut`` is told how many characters did not fit (:data:`INPUT_MAX`).
    """

    def __init__(
        self,
        edit: ChatInput,
        process: Callable[[list[Key]], object],
        on_cut: Callable[[int], object] = lambda dropped: None,
    ) -> None:
        self.edit = edit
        self.process = process
        self.on_cut = on_cut
        self.pasting = False

    def _typed(self, key: Key) -> str | None:
        """The text ``key`` types into the edit, or None for any other key."""
        if not isinstance(key, str):
            return None
        if len(key) == 1 and " " <= key <= "~":
            return key  # printable ASCII, most of any paste: no need to ask the edit
        if self.pasting and key in ("enter", "tab"):
            return "\n" if key == "enter" else "\t"
        if self.edit.valid_char(key):
            return key
        return None

    def _has_a_run(self, keys: list[Key]) -> bool:
        """Two characters or more to type (looks no further than the second)."""
        found = 0
        for key in keys:
            if self._typed(key) is not None:
                found += 1
                if found == 2:
                    return True
        return False

    def __call__(self, keys: list[Key], raw: list[int]) -> list[Key]:
        if not self.pasting and "begin paste" not in keys and not self._has_a_run(keys):
            return keys  # at most one character: urwid handles the batch as usual
        run: list[str] = []
        rest: list[Key] = []
        for key in keys:
            if key in ("begin paste", "end paste"):
                self.pasting = key == "begin paste"
                continue
            typed = self._typed(key)  # (Enter and Tab mean text only inside a paste)
            if typed is not None:
                run.append(typed)
                continue
            self._insert(run)
            if key == "window resize":
                rest.append(key)  # the loop rereads the screen size after the batch
            else:
                self.process([key])
        self._insert(run)
        return rest

    def _insert(self, run: list[str]) -> None:
        if not run:
            return
        text = "".join(run)
        run.clear()
        room = self.edit.room_left()
        if len(text) > room:
            self.on_cut(len(text) - room)
            text = text[:room]
        if text:
            self.edit.insert_text(text)
