"""Operating a server: the admin listener (``--admin-port``: ``/metrics`` for
Prometheus, ``/healthz`` and ``/readyz`` for probes) and ``trio-chat status``.

Imported only when the admin listener is on (``prometheus_client`` stays off the
server's import path otherwise): :mod:`.http` serves it, :mod:`.collector` builds the
metrics on each scrape from :mod:`trio_chat.server.metrics`, :mod:`.health` says
whether the server is ready and measures the event loop's lag, :mod:`.status` is the
``trio-chat status`` command's summary.
"""

from .http import serve_admin

__all__ = ["serve_admin"]
