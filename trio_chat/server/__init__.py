"""The server: :mod:`.app` (``serve``: listeners, room, shutdown), :mod:`.room` (who
gets each message), :mod:`.session` (one connection's reader and writer),
:mod:`.delivery` (where a message goes: the store, or Redis), :mod:`.limits` (flood
control and connection caps, pure), :mod:`.pacing` and :mod:`.process`."""
