"""Benchmarks, never imported by ``serve`` or ``join``: ``trio-chat bench`` (:mod:`.cli`,
:mod:`.runner`), the redis-server launcher the cluster benchmark and tests share
(:mod:`.redis_server`), and two micro-benchmarks run as scripts
(``python -m trio_chat.bench.store``, ``python -m trio_chat.bench.redis_round_trip``).
Their extra dependencies (psutil, py-spy) are in the ``bench`` extra."""
