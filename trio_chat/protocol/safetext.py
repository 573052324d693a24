"""Safe text on the wire: JSON that never carries a raw terminal control or bidi control.

Chat text reaches ``nc`` users and ``trio-chat join --json`` printed as raw JSON, so a
raw C1 control (U+009B is a CSI on many terminals), DEL, a bidi override or a line
separator in a JSON string would act on their screens. ``json.dumps`` with
``ensure_ascii=False`` escapes only C0 controls; :func:`escape_unsafe` escapes the rest
of :data:`UNSAFE` as ``\\uXXXX``: the same JSON string (a decoder gets the same value),
different wire bytes. See docs/protocol.md, *Safe text*.
"""

from __future__ import annotations

import re
from typing import Final

#: What a server's JSON never carries raw (C0 controls are escaped by ``json`` itself):
#: DEL and the C1 controls (U+007F-U+009F); the bidi embeddings and overrides
#: (U+202A-U+202E) and isolates (U+2066-U+2069); the bidi marks (U+200E LRM, U+200F RLM,
#: U+061C ALM: invisible, and they move neutral characters such as digits and
#: punctuation); the line and paragraph separators U+2028/U+2029 (a line break to some
#: terminals and to JavaScript before ES2019); and lone surrogates (U+D800-U+DFFF, never
#: in the server's own text, but the client re-encodes what a server sent), which
#: cannot be written as UTF-8 at all.
UNSAFE: Final = re.compile(
    "[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def escape_unsafe(json_text: str) -> str:
    """``json_text`` (JSON) with every :data:`UNSAFE` character escaped as ``\\uXXXX``.

    Every such character can only occur inside a JSON string (the syntax is ASCII
    and has no DEL), where ``\\uXXXX`` means the same character. The common cases
    cost one C-speed test: ASCII text an O(1) ``isascii`` and a search for DEL; other
    text ``isprintable`` (every unsafe character is unprintable: categories Cc, Cf,
    Zl, Zp; JSON has already escaped C0), then a regex search only if that fails (a
    no-break space or an emoji's zero-width joiner is unprintable but safe). The
    substitution runs only when an unsafe character is there.
    """
    if json_text.isascii():
        if "\x7f" not in json_text:
            return json_text
    elif json_text.isprintable() or UNSAFE.search(json_text) is None:
        return json_text
    return UNSAFE.sub(_escape, json_text)
