"""Moderation shared by every server of a cluster: bans, mutes, ops, modes and voice
kept in Redis, so a ban made on one server holds on all of them.

A :class:`~trio_chat.moderation.service.Backend` over the cluster's link. Every change
is one Lua script (:data:`MODERATE`): the change, its audit entry (a stream, trimmed
to about :data:`AUDIT_KEEP`) and a bump of ``mod:version``, atomically. Each server's
:class:`~trio_chat.moderation.service.ModerationService` looks at that version every
second and, when another server changed it, reloads the state and applies it to its
own connections (a server-wide ban closes them). Sanction ids come from ``INCR``, one
sequence for the cluster.

Keys (after the cluster's prefix): ``mod:sanctions`` (hash ``ban:ID``/``mute:ID`` to
the sanction as JSON), ``mod:ops`` and ``mod:voiced`` (sets of ``[room, key]`` as
JSON), ``mod:modes`` (hash room to its modes), ``mod:ids``, ``mod:version``,
``mod:audit``; the server admins are ``--admin``'s and the accounts' ``acct:admins``
(:mod:`.accounts`).  While Redis is unreachable, moderation messages are refused
(``not_permitted`` saying so) and the state last loaded holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, replace
from typing import Any, Final

import trio

from ..moderation.model import AuditEntry, Kind, Moderation, RoomModes, Sanction
from ..protocol import NOT_PERMITTED, ProtocolError
from .link import COMMAND_TIMEOUT, PREFIX, Cluster

#: Audit entries the stream keeps (about).
AUDIT_KEEP: Final = 100_000

#: ``ARGV``: prefix, the audit entry as JSON (or ""), the audit stream's length, then
#: operations: ``add KIND JSON`` (a sanction: returns its new id), ``del FIELD``
#: (a sanction), ``sadd|srem KEY MEMBER``, ``hset KEY FIELD VALUE``, ``hdel KEY
#: FIELD``, ``forget ROOM`` (everything of a room), ``purge NOW`` (the sanctions that
#: ended). Bumps ``mod:version``.
MODERATE: Final = """
local p = ARGV[1]
local result = 0
local sanctions = p .. 'mod:sanctions'
local i = 4
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'add' then
    local id = redis.call('INCR', p .. 'mod:ids')
    redis.call('HSET', sanctions, ARGV[i + 1] .. ':' .. id, ARGV[i + 2])
    result = id
    i = i + 3
  elseif op == 'del' then
    redis.call('HDEL', sanctions, ARGV[i + 1])
    i = i + 2
  elseif op == 'sadd' or op == 'srem' then
    redis.call(string.upper(op), p .. ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  elseif op == 'hset' then
    redis.call('HSET', p .. ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
    i = i + 4
  elseif op == 'hdel' then
    redis.call('HDEL', p .. ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  elseif op == 'forget' or op == 'purge' then
    local arg = ARGV[i + 1]
    local all = redis.call('HGETALL', sanctions)
    for j = 1, #all, 2 do
      local s = cjson.decode(all[j + 1])
      local ends = s['until']
      if (op == 'forget' and s['room'] == arg) or
         (op == 'purge' and type(ends) == 'number' and ends <= tonumber(arg)) then
        redis.call('HDEL', sanctions, all[j])
      end
    end
    if op == 'forget' then
      for _, key in ipairs({'mod:ops', 'mod:voiced'}) do
        for _, member in ipairs(redis.call('SMEMBERS', p .. key)) do
          if cjson.decode(member)[1] == arg then redis.call('SREM', p .. key, member) end
        end
      end
      redis.call('HDEL', p .. 'mod:modes', arg)
    end
    i = i + 2
  else
    return redis.error_reply('unknown moderation operation ' .. op)
  end
end
if ARGV[2] ~= '' then
  redis.call('XADD', p .. 'mod:audit', 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[2])
end
redis.call('INCR', p .. 'mod:version')
return result
"""

_SANCTION_FIELDS: Final = ("room", "target", "name", "account", "network", "reason", "by",
                           "created", "until")


def _pair(room: str, key: str) -> str:
    return json.dumps([room, key])


class RedisBackend:
    """Moderation in the cluster's Redis (see the module doc)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def _moderate(self, entry: AuditEntry | None, *ops: str | int) -> int:
        audit = json.dumps(asdict(entry)) if entry is not None else ""
        result = await self.cluster.moderate(MODERATE, [audit, AUDIT_KEEP, *ops])
        return int(result or 0)

    async def load(self, now: float, admins: Iterable[str]) -> Moderation:
        client = self._client()
        with trio.fail_after(COMMAND_TIMEOUT):
            sanctions = await client.hgetall(PREFIX + "mod:sanctions")
            ops = await client.smembers(PREFIX + "mod:ops")
            voiced = await client.smembers(PREFIX + "mod:voiced")
            modes = await client.hgetall(PREFIX + "mod:modes")
            # The accounts' admins (trio-chat admin grant --redis; a grant bumps the
            # version every server watches).
            granted = await client.smembers(PREFIX + "acct:admins")
        state = Moderation(admins={*admins, *(str(key) for key in granted)})
        for field, value in sanctions.items():
            kind, _, number = str(field).partition(":")
            fields = json.loads(value)
            sanction = Sanction(int(number), "ban" if kind == "ban" else "mute",
                                *(fields.get(name) for name in _SANCTION_FIELDS))
            if sanction.active(now):
                state.add(sanction)
        for member in ops:
            room, account = json.loads(member)
            state.set_op(room, account, True)
        for member in voiced:
            room, name = json.loads(member)
            state.set_voice(room, name, True)
        for room, value in modes.items():
            flags = json.loads(value)
            state.set_modes(str(room), RoomModes(bool(flags.get("registered_only")),
                                                 bool(flags.get("moderated"))))
        return state

    def _client(self) -> Any:
        client = self.cluster.client
        if client is None:
            raise ProtocolError(NOT_PERMITTED, "moderation is unavailable: Redis is unreachable")
        return client

    async def add_sanction(self, sanction: Sanction, entry: AuditEntry) -> Sanction:
        fields = {name: getattr(sanction, name) for name in _SANCTION_FIELDS}
        number = await self._moderate(entry, "add", sanction.kind, json.dumps(fields))
        return replace(sanction, id=number)

    async def remove_sanctions(self, kind: Kind, ids: list[int], entry: AuditEntry) -> None:
        ops: list[str | int] = []
        for number in ids:
            ops += ["del", f"{kind}:{number}"]
        await self._moderate(entry, *ops)

    async def set_op(self, room: str, account: str, on: bool,
                     entry: AuditEntry | None) -> None:
        await self._moderate(entry, "sadd" if on else "srem", "mod:ops", _pair(room, account))

    async def set_voice(self, room: str, name: str, on: bool, entry: AuditEntry) -> None:
        await self._moderate(entry, "sadd" if on else "srem", "mod:voiced", _pair(room, name))

    async def set_modes(self, room: str, modes: RoomModes, entry: AuditEntry) -> None:
        if modes == RoomModes():
            await self._moderate(entry, "hdel", "mod:modes", room)
        else:
            await self._moderate(entry, "hset", "mod:modes", room, json.dumps(modes.to_wire()))

    async def record(self, entry: AuditEntry) -> None:
        await self._moderate(entry)

    async def forget_room(self, room: str) -> None:
        await self._moderate(None, "forget", room)

    async def purge_expired(self, now: float) -> None:
        await self._moderate(None, "purge", repr(now))

    async def changed(self) -> int:
        client = self._client()
        with trio.fail_after(COMMAND_TIMEOUT):
            value = await client.get(PREFIX + "mod:version")
        return int(value or 0)

    async def log(self, limit: int) -> list[AuditEntry]:
        """The newest ``limit`` audit entries, oldest first."""
        client = self._client()
        with trio.fail_after(COMMAND_TIMEOUT):
            entries = await client.xrevrange(PREFIX + "mod:audit", count=limit)
        return [AuditEntry(**json.loads(fields["e"])) for _, fields in reversed(entries)]

    async def aclose(self) -> None:
        pass
