"""Account events (``register``, ``login``, ``logout``, ``password``) and the
``token`` message, sans I/O (docs/protocol.md, *Accounts*).

Passwords, invite codes and tokens are kept out of every event's ``repr`` and out of
every error text: nothing that logs an event or an error can leak one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .errors import MISSING_FIELD, ProtocolError
from .messages import encode
from .names import validate_name
from .rooms import validate_room

#: Longest invite code or token read from a client (longer: not one of ours).
MAX_SECRET_FIELD: Final = 512
#: The JSON message types this module decodes.
ACCOUNT_TYPES: Final = frozenset({"register", "login", "logout", "password"})


@dataclass(frozen=True, slots=True)
class Register:
    """Create an account and log in to it: a ``join`` with credentials."""

    user: str
    password: str = field(repr=False)
    invite: str | None = field(default=None, repr=False)
    since: int | None = None
    batch: bool = False
    plain: bool = False
    #: The room it enters (``#lobby`` on a first join without one).
    room: str | None = None


@dataclass(frozen=True, slots=True)
class Login:
    """Log in with ``user`` and ``password``, or with a ``token``: a ``join`` with
    credentials."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    since: int | None = None
    batch: bool = False
    plain: bool = False
    #: The room it enters (``#lobby`` on a first join without one).
    room: str | None = None


@dataclass(frozen=True, slots=True)
class Logout:
    """End the login on this connection (it leaves the room) and revoke the
    account's tokens."""

    plain: bool = False


@dataclass(frozen=True, slots=True)
class Password:
    """Change the logged-in account's password."""

    old: str = field(repr=False)
    new: str = field(repr=False)


AccountEvent = Register | Login | Logout | Password
#: The events that send a password or a token.
CREDENTIALS: Final = (Register, Login, Password)


def _secret(obj: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    """A password, code or token field: a string (never echoed in an error)."""
    value = obj.get(name)
    if value is None:
        if required:
            raise ProtocolError(MISSING_FIELD, f"field '{name}' is required")
        return None
    if not isinstance(value, str):
        raise ProtocolError(MISSING_FIELD, f"field '{name}' must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(MISSING_FIELD, f"field '{name}' is not valid Unicode") from None
    return value


def _user(obj: Mapping[str, Any]) -> str:
    value = obj.get("user")
    if value is None:
        raise ProtocolError(MISSING_FIELD, "field 'user' is required")
    if not isinstance(value, str):
        raise ProtocolError(MISSING_FIELD, "field 'user' must be a string")
    return validate_name(value)


def _since(obj: Mapping[str, Any]) -> int | None:
    value = obj.get("since")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(MISSING_FIELD, "field 'since' must be a non-negative integer")
    return value


def _room(obj: Mapping[str, Any]) -> str | None:
    room = obj.get("room")
    return validate_room(room) if room is not None else None


def account_event(kind: str, obj: Mapping[str, Any]) -> AccountEvent:
    """Decode a JSON message whose ``type`` is in :data:`ACCOUNT_TYPES`."""
    if kind == "register":
        password = _secret(obj, "password")
        assert password is not None
        invite = _secret(obj, "invite", required=False)
        if invite is not None and len(invite) > MAX_SECRET_FIELD:
            invite = ""  # no code of ours: refused as unknown
        return Register(_user(obj), password, invite, _since(obj), obj.get("batch") is True,
                        room=_room(obj))
    if kind == "login":
        token = _secret(obj, "token", required=False)
        if token is not None:
            return Login(token=token[:MAX_SECRET_FIELD + 1], since=_since(obj),
                         batch=obj.get("batch") is True, room=_room(obj))
        user = _user(obj)
        return Login(user, _secret(obj, "password"), since=_since(obj),
                     batch=obj.get("batch") is True, room=_room(obj))
    if kind == "logout":
        return Logout()
    old, new = _secret(obj, "old"), _secret(obj, "new")
    assert old is not None and new is not None
    return Password(old, new)


#: What ``/help`` says of the account commands.
HELP_TEXT: Final = (
    "/register NAME PASSWORD: create an account and join under its name; "
    "/login NAME PASSWORD: log in to it; /logout; /password OLD NEW (passwords typed "
    "here have no spaces)"
)
#: The plain-text commands this module decodes.
PLAIN_COMMANDS: Final = frozenset({"/register", "/login", "/logout", "/password"})


def _name_and_password(command: str, arg: str) -> tuple[str, str]:
    """``NAME PASSWORD``: the password is the last word, the name the rest (a name may
    have spaces, a password typed at nc has none)."""
    name, _, password = arg.strip().rpartition(" ")
    if not name.strip() or not password:
        raise ProtocolError(MISSING_FIELD, f"usage: {command} NAME PASSWORD")
    return validate_name(name), password


def plain_account_event(command: str, arg: str) -> AccountEvent:
    """Decode ``/register``, ``/login``, ``/logout`` or ``/password`` typed at nc."""
    if command == "/register":
        return Register(*_name_and_password(command, arg), plain=True)
    if command == "/login":
        user, password = _name_and_password(command, arg)
        return Login(user, password, plain=True)
    if command == "/logout":
        return Logout(plain=True)
    words = arg.split()
    if len(words) != 2:
        raise ProtocolError(MISSING_FIELD, "usage: /password OLD NEW")
    return Password(words[0], words[1])


def token_message(token: str, expires: int) -> str:
    """After every successful login or registration: a token that logs in again
    without the password until ``expires`` (Unix seconds)."""
    return encode({"type": "token", "token": token, "expires": expires})
