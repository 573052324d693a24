"""The trio-chat wire protocol, sans I/O: no trio import, no sockets.

Like h11 and wsproto, this package turns bytes and text from a peer into typed events
(or a :class:`ProtocolError`), and server messages into bytes, once for every
transport:

- :mod:`.events`: client events, and decoding a JSON message or a plain-text line;
- :mod:`.messages`: encoding server messages (each once, for every recipient);
- :mod:`.names`: valid names, and when two names look alike;
- :mod:`.framing`: NDJSON lines out of a byte stream, bounded;
- :mod:`.wsframes`: WebSocket frames as the server writes them;
- :mod:`.wsinput`: WebSocket frames as the server reads them, checked and bounded;
- :mod:`.errors`: the error codes of ``docs/protocol.md``.

The names below are the package's interface; modules import from it.
"""

from .errors import (
    BAD_JSON,
    ERROR_CODES,
    IDLE_TIMEOUT,
    MISSING_FIELD,
    NAME_INVALID,
    NAME_TAKEN,
    NOT_JOINED,
    NOT_OBJECT,
    RATE_LIMITED,
    SERVER_FULL,
    SLOW_CONSUMER,
    TOO_LONG,
    UNKNOWN_TYPE,
    WRONG_PORT,
    ProtocolError,
)
from .events import (
    HELP_TEXT,
    MAX_RESUME,
    MAX_TEXT,
    Blank,
    Chat,
    Event,
    Help,
    Join,
    Leave,
    Listen,
    Ping,
    Who,
    decode_frame,
    decode_json,
    decode_line,
    event_from_object,
    validate_text,
)
from .framing import MAX_LINE, LineBuffer
from .messages import (
    HELLO_TEXT,
    MAX_ID,
    SHUTDOWN_TEXT,
    SYSTEM_USER,
    Encoded,
    chat,
    dumps,
    encode,
    hello,
    help_message,
    history_end,
    json_array,
    json_array_append,
    pong,
    shutdown,
    summary,
    system,
    timestamp,
    users,
    welcome,
    wire_batch_frame,
    wire_frame,
    wire_line,
)
from .names import MAX_NAME, name_key, skeleton, validate_name, variants
from .wsframes import MAX_BATCH_FRAME

__all__ = [
    "BAD_JSON",
    "ERROR_CODES",
    "HELLO_TEXT",
    "HELP_TEXT",
    "IDLE_TIMEOUT",
    "MAX_BATCH_FRAME",
    "MAX_ID",
    "MAX_LINE",
    "MAX_NAME",
    "MAX_RESUME",
    "MAX_TEXT",
    "MISSING_FIELD",
    "NAME_INVALID",
    "NAME_TAKEN",
    "NOT_JOINED",
    "NOT_OBJECT",
    "RATE_LIMITED",
    "SERVER_FULL",
    "SHUTDOWN_TEXT",
    "SLOW_CONSUMER",
    "SYSTEM_USER",
    "TOO_LONG",
    "UNKNOWN_TYPE",
    "WRONG_PORT",
    "Blank",
    "Chat",
    "Encoded",
    "Event",
    "Help",
    "Join",
    "Leave",
    "LineBuffer",
    "Listen",
    "Ping",
    "ProtocolError",
    "Who",
    "chat",
    "decode_frame",
    "decode_json",
    "decode_line",
    "dumps",
    "encode",
    "event_from_object",
    "hello",
    "help_message",
    "history_end",
    "json_array",
    "json_array_append",
    "name_key",
    "pong",
    "shutdown",
    "skeleton",
    "summary",
    "system",
    "timestamp",
    "users",
    "validate_name",
    "validate_text",
    "variants",
    "welcome",
    "wire_batch_frame",
    "wire_frame",
    "wire_line",
]
