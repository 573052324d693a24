"""Several servers, one room: Redis as the backplane, the history and the presence.

Imported only with ``--redis`` (coredis and anyio stay off the server's import path
otherwise). :mod:`.link` is the delivery and the link to Redis, :mod:`.outbox` what
this server sent and Redis has not shown back, :mod:`.history` the mirror of the
history stream, :mod:`.presence` the other servers' members, :mod:`.scripts` the Lua.
"""

from .link import PREFIX, Cluster, LinkState, open_cluster

__all__ = ["PREFIX", "Cluster", "LinkState", "open_cluster"]
