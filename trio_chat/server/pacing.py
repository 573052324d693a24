"""Fairness between readers and writers: how many messages readers may broadcast,
all together, before every member's writer gets a turn."""

from __future__ import annotations

import trio

#: Of a member's queue, the share that all readers together may fill between two turns
#: of the writers (see :class:`ReadPacer`): 1/16, so 64 messages of the default 1,024.
PACE_SHARE = 16


class ReadPacer:
    """Lets readers handle several messages between checkpoints, yet bounds what they
    broadcast, all together, before the writers get a turn.

    One read can hold a thousand lines. A checkpoint after every message (the simple
    fair rule) lets the writers run between any two broadcasts, so each message costs
    every member a write of its own: half the server's fan-out. Instead, the room
    counts messages; a reader checkpoints once the count since the last *round* reaches
    the budget, and the first reader to come back from such a checkpoint starts the
    next round. Trio runs every task woken in one scheduling batch in the next, so the
    writers get a turn between rounds, and a queue takes at most about
    ``2 x (budget + readers)`` messages before its writer runs: fair for any reader
    that keeps up, like the per-message checkpoint (``2 x readers``), with batches.
    """

    def __init__(self) -> None:
        self._spent = 0
        self._round = 0

    async def step(self, budget: int) -> None:
        """Count one message; checkpoint if this round's ``budget`` is spent."""
        self._spent += 1
        if self._spent < budget:
            return
        ticket = self._round
        await trio.lowlevel.checkpoint()
        if self._round == ticket:  # the first back from this round starts the next
            self._round += 1
            self._spent = 0
