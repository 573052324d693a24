"""Logging setup: readable text lines, or one JSON object per line (``--log-format json``).

Lifecycle lines (connect, join, leave, disconnect with its reason) are INFO; message
text is only ever logged at DEBUG.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

FORMATS = ["text", "json"]
#: Structured fields the lifecycle lines carry (``extra=``); JSON lines include them.
FIELDS = ("event", "transport", "peer", "user", "reason", "online")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, fmt: str = "text") -> None:
    """Log to stderr at ``level`` in ``fmt`` (``text`` or ``json``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # coredis logs each dropped connection (INFO) and each failed attempt to reconnect
    # (ERROR) with a traceback; the cluster link logs the loss, the outage and the
    # reconnection itself (trio_chat.cluster), so only --log-level debug shows them.
    if logging.root.level > logging.DEBUG:
        logging.getLogger("coredis").setLevel(logging.CRITICAL)
