"""What encoding one chat message costs, against a plain ``json.dumps`` in the same run.

``python -m trio_chat.bench.encode`` times :func:`trio_chat.protocol.chat` (compact JSON
with the safe-text escapes of docs/protocol.md) and its peer, the encoder without them
(``json.dumps(..., ensure_ascii=False)`` per call, as trio-chat encoded before issue
13), on the same texts, interleaved, best of several repeats. A benchmark, not a test:
it prints figures and ratios. A message is encoded once for all its recipients.
"""

from __future__ import annotations

import argparse
import json
import timeit
from typing import Any, Final

from ..protocol import Encoded, chat

TS: Final = "2026-11-26T18:00:00.123Z"
TEXTS: Final = {
    "ascii 40": "hello everyone, how is it going today?!",
    "ascii 4096": ("the quick brown fox jumps over the lazy dog " * 94)[:4096],
    "latin-1 40": "café au lait, crème brûlée, naïve façade",
    "cjk+emoji 40": "こんにちは皆さん、今日はどうですか\uff1f🙂🎉 привет мир",
    "hebrew/arabic 40": "שלום לכולם, מה שלומכם היום? مرحبا بالجميع",
    "emoji zwj 40": "team: 👩\u200d💻👨\u200d👩\u200d👧 ok, ça va? 12\u00a0€",
    "cyrillic 1000": ("Привет всем, как дела сегодня? " * 40)[:1000],
    "cjk 4096": ("こんにちは皆さん🙂 привет " * 250)[:4096],
    "unsafe 40": "x\u202eevil\u0085\x9b31m\u2028y" + "a" * 25,
}
REPEATS: Final = 9


def plain_chat(user: str, text: str, ts: str, message_id: int) -> str:
    """The peer: the same message, ``json.dumps`` per call, no escapes."""
    message: dict[str, Any] = {"type": "chat", "id": message_id, "user": user, "text": text,
                               "timestamp": ts}
    return Encoded(json.dumps(message, ensure_ascii=False, separators=(",", ":")))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS, help="best of this many")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the default number of encodings per timing")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.scale <= 0:
        parser.error("--repeats must be at least 1 and --scale positive")
    print(f"{'text':18s} {'plain us':>9s} {'trio-chat us':>13s} {'ratio':>6s}")
    for name, text in TEXTS.items():
        assert json.loads(chat("Ann", text, TS, 1)) == json.loads(plain_chat("Ann", text, TS, 1))
        number = max(1, int((100_000 if len(text) < 1000 else 10_000) * args.scale))
        plain = timeit.Timer(lambda: plain_chat("Ann", text, TS, 123456))  # noqa: B023
        ours = timeit.Timer(lambda: chat("Ann", text, TS, 123456))  # noqa: B023
        plain_times, our_times = [], []
        for _ in range(args.repeats):
            plain_times.append(plain.timeit(number))
            our_times.append(ours.timeit(number))
        peer, us = min(plain_times) / number * 1e6, min(our_times) / number * 1e6
        print(f"{name:18s} {peer:9.3f} {us:13.3f} {us / peer:6.2f}")


if __name__ == "__main__":
    main()
