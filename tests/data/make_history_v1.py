"""How ``history-v1.db`` and ``history-v1-running.db`` were made: by trio-chat as it
was before rooms (commit 8cbb141, history schema version 1), for the migration tests
(tests/test_room_history.py). Run with that version's Python, from a directory that
is not a checkout: ``python make_history_v1.py OUT_DIR``.

``--history-keep 25``, one user, 30 messages (one with accents and an emoji, one with
a newline): ids 6-30 kept, 1-5 pruned. ``history-v1.db`` after a clean stop;
``history-v1-running.db`` copied while the server ran (not marked clean, as after a
kill).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def main(out: Path) -> None:
    db = out / "work.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trio_chat", "serve", "--tcp-port", "0", "--ws-port", "0",
         "--db", str(db), "--history-keep", "25", "--rate-limit", "0"],
        stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    port = 0
    for line in proc.stderr:
        if match := re.search(r"listening: tcp://127.0.0.1:(\d+)", line):
            port = int(match.group(1))
            break
    sock = socket.create_connection(("127.0.0.1", port))
    stream = sock.makefile("rwb")

    def send(obj: dict[str, Any]) -> None:
        stream.write(json.dumps(obj).encode() + b"\n")
        stream.flush()

    def until(wanted: Callable[[dict[str, Any]], bool]) -> None:
        while not wanted(json.loads(stream.readline())):
            pass

    send({"type": "join", "user": "Ann"})
    until(lambda m: m["type"] == "system")
    texts = [f"message {n}" for n in range(1, 31)]
    texts[5] = "héllo wörld 👋"
    texts[6] = "line one\nline two"
    for text in texts:
        send({"type": "chat", "text": text})
        until(lambda m, text=text: m["type"] == "chat" and m["text"] == text)  # type: ignore[misc]
    time.sleep(0.3)  # committed (the commit interval is 20 ms)
    live, copy = sqlite3.connect(db), sqlite3.connect(out / "history-v1-running.db")
    live.backup(copy)
    live.close()
    copy.close()
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    sock.close()
    db.rename(out / "history-v1.db")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
