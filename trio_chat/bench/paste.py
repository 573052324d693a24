"""How long a paste takes to show in ``trio-chat join`` (a benchmark, not a test).

A real ``trio-chat serve`` subprocess and, for each size, the interactive client in a
private tmux server (80x24 unless told otherwise). The paste is ``tmux send-keys -l`` of
that many characters (words, ending in a unique marker), the way a terminal hands a
paste to a program: as typed keys. Timed from the ``send-keys`` call until the marker
shows on the screen (``capture-pane``, polled every 5 ms). Then one more key is typed
and timed until it shows: whether the screen is still responsive after the paste.

Run: ``.venv/bin/python -m trio_chat.bench.paste`` (``--help`` for sizes). Needs tmux.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

LISTENING = re.compile(r"trio-chat listening: tcp://127\.0\.0\.1:(\d+)")
POLL = 0.005


class Terminal:
    """One private tmux server running one command."""

    def __init__(self, tmp: Path, width: int, height: int) -> None:
        self.socket = f"trio-chat-bench-{uuid.uuid4().hex[:12]}"
        self.conf = tmp / "tmux.conf"
        self.conf.write_text("set -g status off\n")
        self.width, self.height = width, height
        self.socket_path = ""

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, "-f", str(self.conf), *args],
            capture_output=True, check=True, text=True,
        )
        return done.stdout

    def start(self, command: Sequence[str]) -> None:
        self.tmux("new-session", "-d", "-s", "b", "-x", str(self.width), "-y", str(self.height),
                  shlex.join(command))
        self.socket_path = self.tmux("display", "-p", "#{socket_path}").strip()

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "b")

    def wait_for(self, text: str, timeout: float) -> float | None:
        """Seconds until ``text`` shows (None if not within ``timeout``)."""
        start = time.perf_counter()
        while True:
            if text in self.screen():
                return time.perf_counter() - start
            if time.perf_counter() - start > timeout:
                return None
            time.sleep(POLL)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       check=False)
        if self.socket_path:
            Path(self.socket_path).unlink(missing_ok=True)


def paste_text(size: int, marker: str) -> str:
    """``size`` characters of short words ending in ``marker`` (so wrapping never splits it)."""
    words = []
    length = 0
    n = 0
    while length < size - len(marker):
        word = f"w{n % 1000:03d} "
        words.append(word)
        length += len(word)
        n += 1
    return "".join(words)[: size - len(marker)] + marker


def measure(port: int, size: int, tmp: Path, args: argparse.Namespace) -> str:
    terminal = Terminal(tmp, args.width, args.height)
    name = f"bench{size}"
    command = [sys.executable, "-m", "trio_chat", "join", "--name", name, "--port", str(port)]
    terminal.start(command)
    try:
        if terminal.wait_for(f"connected as {name}", 30) is None:
            return f"{size:>6} chars: the client did not connect:\n{terminal.screen()}"
        marker = f"Q{size}END"
        start = time.perf_counter()
        terminal.tmux("send-keys", "-t", "b", "-l", paste_text(size, marker))
        shown = terminal.wait_for(marker, args.timeout)
        took = time.perf_counter() - start
        if shown is None:
            return f"{size:>6} chars: not shown within {args.timeout:g} s"
        start = time.perf_counter()
        terminal.tmux("send-keys", "-t", "b", "-l", "Z")
        key = terminal.wait_for(f"{marker}Z", args.timeout)
        key_text = f"{key * 1000:7.0f} ms" if key is not None else "not shown"
        return f"{size:>6} chars: shown after {took:6.3f} s; one more key after {key_text}"
    finally:
        terminal.kill()


def main(args: argparse.Namespace) -> None:
    if shutil.which("tmux") is None:
        raise SystemExit("tmux is not installed (Debian package tmux)")
    server = subprocess.Popen(
        [sys.executable, "-m", "trio_chat", "serve", "--tcp-port", "0", "--ws-port", "0",
         "--db", ":memory:", "--max-text", str(max(args.sizes))],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    assert server.stderr is not None
    try:
        for line in server.stderr:
            if match := LISTENING.search(line):
                port = int(match[1])
                break
        else:
            raise SystemExit("the server did not start")
        with tempfile.TemporaryDirectory() as tmp:
            for size in args.sizes:
                print(measure(port, size, Path(tmp), args), flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trio_chat.bench.paste", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("sizes", type=int, nargs="*", default=[1000, 2000, 4000, 10000],
                        help="characters per paste (default: 1000 2000 4000 10000)")
    parser.add_argument("--timeout", type=float, default=120,
                        help="seconds to wait for one paste to show")
    parser.add_argument("--width", type=int, default=80)
    parser.add_argument("--height", type=int, default=24)
    args = parser.parse_args(argv)
    if any(size < 16 for size in args.sizes):
        parser.error("a paste is at least 16 characters (it ends in a marker)")
    return args


if __name__ == "__main__":
    main(parse_args())
