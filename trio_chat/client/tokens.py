"""``--token-file``: where ``trio-chat join`` keeps its login token between runs.

The file holds the last ``token`` the server sent (one line, mode 0600), so the next
run logs in without asking for the password; a token the server refuses (expired,
revoked) is removed. Without ``--token-file`` the token lives only in memory (the
client still logs in with it after a lost connection).
"""

from __future__ import annotations

import logging
import os
from contextlib import suppress
from pathlib import Path

log = logging.getLogger(__name__)

#: Longest token read back (the server's are far shorter).
MAX_TOKEN = 512


class TokenFile:
    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None

    def load(self) -> str | None:
        if self.path is None:
            return None
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            log.warning("cannot read the token file %s: %s", self.path, error)
            return None
        return text if 0 < len(text) <= MAX_TOKEN else None

    def save(self, token: str) -> None:
        if self.path is None:
            return
        try:
            partial = self.path.with_name(self.path.name + ".new")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(token + "\n")
            os.replace(partial, self.path)
        except OSError as error:
            log.warning("cannot write the token file %s: %s", self.path, error)

    def forget(self) -> None:
        if self.path is not None:
            with suppress(OSError):
                self.path.unlink()
