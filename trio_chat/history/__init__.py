"""Message history: ids, the newest messages in memory, replays (:mod:`.base`), and
one server's store: a SQLite file (:mod:`.sqlite`) committed by one writer thread
(:mod:`.writer`). A cluster's history lives in Redis (:mod:`trio_chat.cluster`)."""
