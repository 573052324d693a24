"""Logging setup: readable text lines, or one JSON object per line (``--log-format json``).

Lifecycle lines (connect, join, leave, disconnect with its reason) are INFO; message
text is only ever logged at DEBUG. What peers wrote (a chat at DEBUG, a name, a close
reason) reaches the operator's terminal too: a text line shows its controls and bidi
characters as escapes, and a JSON line carries them escaped (protocol/safetext.py).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Final

from .protocol import dumps

FORMATS = ["text", "json"]
#: Structured fields the lifecycle lines carry (``extra=``); JSON lines include them.
FIELDS = ("event", "transport", "peer", "user", "reason", "online")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Shown as escapes in a text log line: C0 controls (a newline would start a forged log
#: line), DEL, C1, the bidi controls and marks, line separators, lone surrogates.
_UNSAFE_IN_LOGS: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, one line per record: the record's line has what peers wrote
    escaped (a traceback after it keeps its own lines)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _UNSAFE_IN_LOGS.sub(_escape, super().formatMessage(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the structured
    fields of lifecycle lines (event, transport, peer, user, reason, online) and any
    traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return dumps(entry)


def setup_logging(level: str, fmt: str = "text") -> None:
    """Log to stderr at ``level`` in ``fmt`` (``text`` or ``json``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # coredis logs each dropped connection (INFO) and each failed attempt to reconnect
    # (ERROR) with a traceback; the cluster link logs the loss, the outage and the
    # reconnection itself (trio_chat.cluster), so only --log-level debug shows them.
    if logging.root.level > logging.DEBUG:
        logging.getLogger("coredis").setLevel(logging.CRITICAL)
