"""What the tests share, one copy of each (import from the module that holds it).

- :mod:`.waits`: how long a test waits for one expected thing (a bound, never slept).
- :mod:`.config`: the server configuration most tests run with.
- :mod:`.tcp`: the NDJSON line clients (Trio and blocking) and a line reader for load.
- :mod:`.ws`: the WebSocket clients (trio-websocket, and a lean wsproto one for load).
- :mod:`.frames`: WebSocket bytes as a client writes them by hand (handshake, masked
  frames), for peers that misbehave below what a client library allows.
- :mod:`.http`: raw HTTP requests to the page's port and their parsed answers.
- :mod:`.admin`: the admin listener's ``/metrics`` scraped and parsed, and the metrics
  every server exports.
- :mod:`.memory`: sessions over in-memory streams (for ``autojump_clock``).
- :mod:`.seats`: a room member without a connection, its queue read by the test.
- :mod:`.processes`: ``trio-chat serve`` and ``trio-chat join`` as child processes.
- :mod:`.tmux`: a private tmux server driving the interactive client.
- :mod:`.browser`: headless Chromium (Playwright), servers in a Trio thread, and a
  page server whose WebSocket side the test plays.
- :mod:`.tls`: a throwaway CA and certificate files.
- :mod:`.redis`: a real redis-server, or a skip (a failure under CI) without one; a
  primary with replicas and sentinels (:class:`~.redis.Sentinels`).
- :mod:`.cluster`: cluster servers in the test's event loop, and waits on their link.
- :mod:`.grpcclient`: a real grpcio client (generated stubs, ``grpc.aio``) driven from
  Trio, for the gRPC port.
"""
