"""The server configuration most tests run with."""

from __future__ import annotations

from typing import Final

from trio_chat import Config

#: Ephemeral ports; flood control off: many tests send bursts to check order and
#: delivery; the limit itself is tested with its own settings (tests/test_flood.py).
#: No per-address connection rate either: every test client is 127.0.0.1, and suites
#: open many connections at once (tests/test_connect_rate.py sets its own).
TEST_CONFIG: Final = Config(tcp_port=0, ws_port=0, rate_limit=0, connect_rate=0)
