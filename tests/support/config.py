"""The server configuration most tests run with."""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from trio_chat import Config

#: Ephemeral ports; flood control off: many tests send bursts to check order and
#: delivery; the limit itself is tested with its own settings (tests/test_flood.py).
#: No per-address connection rate either: every test client is 127.0.0.1, and suites
#: open many connections at once (tests/test_connect_rate.py sets its own). No TCP
#: greeting and no WebSocket that listens by itself: a test client that the shared
#: machine stalls for a moment before it joins must not get either (tests that count
#: messages exactly would fail now and then); :data:`FIRST_CONTACT` has both.
TEST_CONFIG: Final = Config(
    tcp_port=0, ws_port=0, rate_limit=0, connect_rate=0, greet_after=None, listen_after=None
)
#: TEST_CONFIG with the greeting and the listening of a quiet WebSocket as served
#: (tests/test_first_contact.py, tests/test_listeners.py, tests/test_seed_client.py).
FIRST_CONTACT: Final = replace(
    TEST_CONFIG, greet_after=Config.greet_after, listen_after=Config.listen_after
)
