"""The interactive client's input area as widgets, without a terminal: the paste
coalescer keeps key order, bracketed pastes keep line breaks, the input is bounded,
and the area shows at most its rows with the cursor in view (tmux tests drive the
same in a real terminal: tests/test_join_tui.py)."""

from __future__ import annotations

from trio_chat.client.compose import INPUT_MAX, ChatInput, InputArea, Key, PasteCoalescer


class Keys:
    """A coalescer over a fresh input, recording the keys it hands on one by one."""

    def __init__(self) -> None:
        self.edit = ChatInput("> ")
        self.handled: list[Key] = []
        self.cut: list[int] = []
        self.filter = PasteCoalescer(self.edit, self.process, self.cut.append)

    def process(self, keys: list[Key]) -> None:
        for key in keys:
            self.handled.append(key)
            if isinstance(key, str):
                self.edit.keypress((40,), key)

    def feed(self, *keys: Key) -> list[Key]:
        return self.filter(list(keys), [])


def test_runs_of_characters_are_inserted_in_order_with_the_other_keys() -> None:
    keys = Keys()
    assert keys.feed("a", "b", "c", "left", "left", "x", "y", "end", "z") == []
    assert keys.edit.edit_text == "axybcz"
    assert keys.handled == ["left", "left", "end"]


def test_a_batch_without_a_run_goes_to_urwid_unchanged() -> None:
    keys = Keys()
    assert keys.feed("a") == ["a"]
    assert keys.feed("enter") == ["enter"]
    assert keys.feed("x", ("mouse press", 1, 0, 0)) == ["x", ("mouse press", 1, 0, 0)]


def test_a_resize_is_left_for_the_loop() -> None:
    keys = Keys()
    assert keys.feed("a", "b", "window resize", "c") == ["window resize"]
    assert keys.edit.edit_text == "abc"


def test_a_bracketed_paste_keeps_enter_and_tab_even_across_batches() -> None:
    keys = Keys()
    assert keys.feed("begin paste", "o", "n", "e", "enter", "t") == []
    assert keys.feed("enter") == []  # still inside the paste
    assert keys.feed("tab", "x", "end paste", "enter") == []
    assert keys.edit.edit_text == "one\nt\n\tx"
    assert keys.handled == ["enter"]  # the Enter typed after the paste: the app's


def test_the_input_holds_at_most_input_max_characters() -> None:
    keys = Keys()
    keys.edit.set_edit_text("x" * (INPUT_MAX - 3))
    keys.edit.set_edit_pos(INPUT_MAX - 3)
    keys.feed(*"abcdef")
    assert keys.edit.edit_text.endswith("xabc") and len(keys.edit.edit_text) == INPUT_MAX
    assert keys.cut == [3]


def test_readline_keys() -> None:
    edit = ChatInput("> ")
    edit.set_edit_text("one two three")
    edit.set_edit_pos(len(edit.edit_text))
    assert edit.keypress((40,), "ctrl w") is None
    assert edit.edit_text == "one two "
    assert edit.keypress((40,), "ctrl a") is None and edit.edit_pos == 0
    assert edit.keypress((40,), "ctrl e") is None and edit.edit_pos == len("one two ")
    assert edit.keypress((40,), "ctrl u") is None and edit.edit_text == ""
    assert edit.keypress((40,), "ctrl y") is None and edit.edit_text == "one two "
    assert edit.keypress((40,), "ctrl d") == "ctrl d"  # nothing under the cursor: the app's


def test_the_area_shows_at_most_its_rows_with_the_cursor_in_view() -> None:
    edit = ChatInput("> ")
    area = InputArea(edit, max_rows=3)
    edit.set_edit_text("\n".join(f"line {n}" for n in range(10)))
    edit.set_edit_pos(len(edit.edit_text))
    assert area.rows((20,), True) == 3
    canvas = area.render((20,), True)
    assert [row.decode().rstrip() for row in canvas.text] == ["line 7", "line 8", "line 9"]
    assert area.get_cursor_coords((20,)) == (6, 2)
    edit.set_edit_pos(0)  # back to the start: the view follows the cursor
    canvas = area.render((20,), True)
    assert [row.decode().rstrip() for row in canvas.text] == ["> line 0", "line 1", "line 2"]
    assert area.get_cursor_coords((20,)) == (2, 0)
    edit.set_edit_text("short")
    assert area.rows((20,), True) == 1
