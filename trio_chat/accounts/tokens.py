"""Login tokens: ``{"type":"login","token":...}`` logs in without the password.

A token is ``PAYLOAD.SIGNATURE``, both base64url without padding: the payload is the
compact JSON ``{"a":ACCOUNT,"g":GENERATION,"e":EXPIRES}`` and the signature its
HMAC-SHA256 under the server's key. It is good until ``EXPIRES`` (Unix seconds;
:data:`LIFETIME` after it was issued) and while the account's *generation* in the
store is still ``GENERATION``: a logout or a password change increments it, which
revokes every token issued before. Nothing is kept per token.

The key is ``--secret`` / ``TRIO_CHAT_SECRET`` (every server given the same secret
accepts the others' tokens: a cluster), or else 32 random bytes generated once and
kept beside the database in ``DB.secret`` (mode 0600), so tokens survive a restart;
an in-memory database gets a key for the life of the process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: Seconds a token is good for after it is issued (12 hours: a working day of page
#: reloads and reconnections; then the password again).
LIFETIME: Final = 12 * 3600
#: Longest token taken from a client; a longer one is no token of ours.
MAX_TOKEN: Final = 512
#: Bytes of a generated key.
KEY_BYTES: Final = 32


@dataclass(frozen=True)
class Claims:
    """What a valid token says: whose it is, its generation, when it expires."""

    account: str
    generation: int
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Tokens:
    """Issue and check tokens under one key; ``clock`` gives Unix seconds."""

    def __init__(
        self, key: bytes, *, lifetime: int = LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not key:
            raise ValueError("the token key is empty")
        self._key = key
        self.lifetime = lifetime
        self._clock = clock

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, account: str, generation: int) -> tuple[str, int]:
        """A fresh token for ``account`` at ``generation``, and when it expires."""
        expires = int(self._clock()) + self.lifetime
        body = json.dumps({"a": account, "g": generation, "e": expires},
                          separators=(",", ":"), ensure_ascii=True)
        payload = _b64(body.encode("ascii"))
        return f"{payload}.{self._sign(payload)}", expires

    def check(self, token: str) -> Claims | None:
        """The token's claims if it is ours, well formed and not expired; else None.
        (Whether its generation is still the account's is the store's to say.)"""
        if len(token) > MAX_TOKEN or not token.isascii():
            return None
        payload, dot, signature = token.partition(".")
        if not dot or not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            claims = json.loads(_unb64(payload))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(claims, dict):
            return None
        account, generation, expires = claims.get("a"), claims.get("g"), claims.get("e")
        if not isinstance(account, str) or not isinstance(generation, int) \
                or not isinstance(expires, int) or isinstance(expires, bool):
            return None
        if expires <= self._clock():
            return None
        return Claims(account, generation, expires)


def secret_path(db: str) -> str:
    """Where the generated key of database ``db`` is kept."""
    return os.path.realpath(db) + ".secret"


def load_key(secret: str | None, db: str) -> bytes:
    """The token key: ``secret`` if given; else the key kept beside ``db`` (made now,
    mode 0600, if there is none); for an in-memory database, a key for this process."""
    if secret:
        return secret.encode("utf-8")
    if db == ":memory:":
        return secrets.token_bytes(KEY_BYTES)
    path = Path(secret_path(db))
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = b""
    if len(key) >= KEY_BYTES:
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:  # an empty or short file: not a key of ours; or a race
        existing = path.read_bytes()
        if len(existing) >= KEY_BYTES:
            return existing
        path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, key)
    finally:
        os.close(fd)
    return key
