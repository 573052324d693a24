"""Benchmarks, never imported by ``serve`` or ``join``.

``trio-chat bench`` (:mod:`.cli`, loaded only when run): :mod:`.targets` (what is
measured: the servers and the load), :mod:`.runner` (one measurement, and every target
in turn), :mod:`.servers` (their processes: start, stop, CPU, RSS, py-spy),
:mod:`.loader` (the processes holding the clients), :mod:`.report` (tables, JSON).
The redis-server launcher the cluster benchmark and the tests share is
:mod:`.redis_server`. Two micro-benchmarks run as scripts: ``python -m
trio_chat.bench.store`` and ``python -m trio_chat.bench.redis_round_trip``. Their extra
dependencies (psutil, py-spy) are in the ``bench`` extra. docs/bench.md is the reference.
"""
