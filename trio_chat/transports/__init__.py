"""The transports: only here is I/O done on client connections.

:mod:`.net` (binding, peer names, keepalive), :mod:`.admission` (what every transport
does around a session), :mod:`.tcp` (NDJSON and plain text), :mod:`.ws` (WebSocket,
with :mod:`.wsconn` for its frame writes), :mod:`.http` (the page, on the WebSocket
port; :mod:`.origin` checks who may connect), :mod:`.tls`, and ``web/`` (the page).
"""
