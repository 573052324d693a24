"""Accounts shared by every server of a cluster (``--redis``): the accounts, invites
and kept direct messages live in Redis, so servers on different machines (each with
its own ``--db``) register, log in, check tokens and replay direct messages for any
account.

An :class:`~trio_chat.accounts.store.AccountsBackend` over a Redis connection (the
cluster's link, or ``trio-chat admin``'s own). Keys (after the cluster's prefix):

- ``acct:KEY`` (hash: ``name``, ``hash``, ``generation``, ``admin``, ``created``):
  one per account, ``KEY`` the name's :func:`~trio_chat.protocol.name_key`;
- ``acct:skel`` (hash skeleton -> name): every account's look-alike class; a
  registration is one script (:data:`REGISTER`) that refuses the name if its key or
  its skeleton is taken, so two servers cannot register look-alikes at once;
- ``acct:names`` (list): names in registration order, which each server follows to
  refuse registered names (and look-alikes) to guests;
- ``acct:admins`` (set of keys): the server admins; a grant or revoke also bumps
  ``mod:version``, so every server's moderation reloads and sees it;
- ``acct:invite:CODE`` (hash ``expires``, ``used_by``): expires in Redis a day after
  the code does;
- ``acct:dms:KEY`` (list of JSON): the direct messages to or from an account, newest
  last, at most :data:`DM_KEEP` of them per account.

While Redis is unreachable, account messages are refused with ``not_permitted``
saying so (nothing is half done: each change is one script or one command).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

import trio

from ..accounts.store import INVITE_LIFETIME, Account, AccountExists, StoredDM
from ..errors import first_leaf
from ..protocol import NOT_PERMITTED, ProtocolError, name_key, skeleton
from .link import COMMAND_TIMEOUT, LINK_ERRORS, PREFIX

#: Direct messages kept per account (the oldest go first): a login replays at most
#: :data:`~trio_chat.accounts.dms.DM_REPLAY_MAX` of them anyway.
DM_KEEP: Final = 1000
#: Seconds an invite is kept in Redis after it expired (then Redis drops it).
INVITE_LINGER: Final = 24 * 3600

#: ARGV: prefix, key, skeleton, name, hash, admin (0/1), created. Returns "" when
#: registered, else the name holding the key or the skeleton.
REGISTER: Final = """
local p = ARGV[1]
local account = p .. 'acct:' .. ARGV[2]
local existing = redis.call('HGET', account, 'name')
if existing then return existing end
local holder = redis.call('HGET', p .. 'acct:skel', ARGV[3])
if holder then return holder end
redis.call('HSET', account, 'name', ARGV[4], 'hash', ARGV[5], 'generation', 0,
           'admin', ARGV[6], 'created', ARGV[7])
redis.call('HSET', p .. 'acct:skel', ARGV[3], ARGV[4])
redis.call('RPUSH', p .. 'acct:names', ARGV[4])
if ARGV[6] == '1' then
  redis.call('SADD', p .. 'acct:admins', ARGV[2])
  redis.call('INCR', p .. 'mod:version')
end
return ''
"""

#: ARGV: prefix, key, hash. Replaces the hash and revokes the tokens; the new
#: generation (-1: no account).
SET_PASSWORD: Final = """
local account = ARGV[1] .. 'acct:' .. ARGV[2]
if redis.call('EXISTS', account) == 0 then return -1 end
redis.call('HSET', account, 'hash', ARGV[3])
return redis.call('HINCRBY', account, 'generation', 1)
"""

#: ARGV: prefix, key, old hash, new hash. Replaces the hash if it is still the old one.
REHASH: Final = """
local account = ARGV[1] .. 'acct:' .. ARGV[2]
if redis.call('HGET', account, 'hash') == ARGV[3] then
  redis.call('HSET', account, 'hash', ARGV[4])
end
return 0
"""

#: ARGV: prefix, key. Revokes every token; the new generation (-1: no account).
REVOKE: Final = """
local account = ARGV[1] .. 'acct:' .. ARGV[2]
if redis.call('EXISTS', account) == 0 then return -1 end
return redis.call('HINCRBY', account, 'generation', 1)
"""

#: ARGV: prefix, key, admin (0/1). The account's name ("" if none); bumps
#: ``mod:version`` so every server's moderation reloads its admins.
SET_ADMIN: Final = """
local p = ARGV[1]
local account = p .. 'acct:' .. ARGV[2]
local name = redis.call('HGET', account, 'name')
if not name then return '' end
redis.call('HSET', account, 'admin', ARGV[3])
if ARGV[3] == '1' then
  redis.call('SADD', p .. 'acct:admins', ARGV[2])
else
  redis.call('SREM', p .. 'acct:admins', ARGV[2])
end
redis.call('INCR', p .. 'mod:version')
return name
"""

#: ARGV: prefix, code, name, now. 1 if the invite was unused and unexpired (now it
#: is spent on ``name``), else 0.
USE_INVITE: Final = """
local invite = ARGV[1] .. 'acct:invite:' .. ARGV[2]
local expires = redis.call('HGET', invite, 'expires')
if not expires or tonumber(expires) <= tonumber(ARGV[4]) then return 0 end
if redis.call('HGET', invite, 'used_by') ~= '' then return 0 end
redis.call('HSET', invite, 'used_by', ARGV[3])
return 1
"""

#: ARGV: prefix, kept per account, then (sender key, recipient key, JSON) triples.
ADD_DMS: Final = """
local p = ARGV[1]
local keep = tonumber(ARGV[2])
for i = 3, #ARGV, 3 do
  local ends = {ARGV[i]}
  if ARGV[i + 1] ~= ARGV[i] then ends[2] = ARGV[i + 1] end
  for _, key in ipairs(ends) do
    local list = p .. 'acct:dms:' .. key
    redis.call('RPUSH', list, ARGV[i + 2])
    redis.call('LTRIM', list, -keep, -1)
  end
end
return 0
"""


def unavailable(why: str = "Redis is unreachable") -> ProtocolError:
    """``not_permitted``: accounts cannot be reached now."""
    return ProtocolError(NOT_PERMITTED, f"accounts are unavailable: {why}")


class RedisAccounts:
    """Accounts in Redis (see the module doc). ``client`` gives the connection to use
    now (None while it is down); ``clock`` Unix seconds."""

    def __init__(
        self, client: Callable[[], Any], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self._clock = clock

    def _connection(self) -> Any:
        client = self._client()
        if client is None:
            raise unavailable()
        return client

    async def _eval(self, source: str, args: Iterable[str | int]) -> Any:
        client = self._connection()
        return await self._do(client.eval(source, keys=[], args=[PREFIX, *args]))

    async def _call(self, command: str, *args: Any) -> Any:
        client = self._connection()
        return await self._do(getattr(client, command)(*args))

    @staticmethod
    async def _do(request: Awaitable[Any]) -> Any:
        failure: BaseException | None = None
        try:
            with trio.fail_after(COMMAND_TIMEOUT):
                return await request
        except* LINK_ERRORS as group:
            failure = first_leaf(group)
        raise unavailable(f"Redis did not take it ({failure!r})")

    async def get(self, name: str) -> Account | None:
        fields = await self._call("hgetall", PREFIX + "acct:" + name_key(name))
        if not fields or "name" not in fields:
            return None
        return Account(str(fields["name"]), str(fields["hash"]),
                       int(fields.get("generation", 0)), fields.get("admin") == "1")

    async def names(self) -> list[str]:
        names, _ = await self.names_since(0)
        return names

    async def names_since(self, cursor: int) -> tuple[list[str], int]:
        """The names registered after the first ``cursor``, and the new cursor (from
        the start again if Redis came back with fewer: it lost its data)."""
        names = await self._call("lrange", PREFIX + "acct:names", cursor, -1)
        if not names and cursor and await self._call("llen", PREFIX + "acct:names") < cursor:
            return await self.names_since(0)
        return [str(name) for name in names], cursor + len(names)

    async def create(self, name: str, password_hash: str, *, admin: bool = False) -> None:
        holder = await self._eval(REGISTER, [
            name_key(name), skeleton(name), name, password_hash, int(admin),
            repr(self._clock()),
        ])
        if holder:
            raise AccountExists(str(holder))

    async def set_password(self, name: str, password_hash: str) -> int:
        return int(await self._eval(SET_PASSWORD, [name_key(name), password_hash]))

    async def rehash(self, name: str, old_hash: str, password_hash: str) -> None:
        await self._eval(REHASH, [name_key(name), old_hash, password_hash])

    async def revoke(self, name: str) -> int:
        return int(await self._eval(REVOKE, [name_key(name)]))

    async def is_admin(self, name: str) -> bool:
        return bool(await self._call("sismember", PREFIX + "acct:admins", name_key(name)))

    async def admins(self) -> list[str]:
        """The server admins' account keys."""
        return sorted(str(key) for key in await self._call("smembers", PREFIX + "acct:admins"))

    async def set_admin(self, name: str, admin: bool) -> str | None:
        found = await self._eval(SET_ADMIN, [name_key(name), int(admin)])
        return str(found) if found else None

    async def create_invite(self, lifetime: float = INVITE_LIFETIME) -> tuple[str, float]:
        """A new invite code, and when it expires (Unix seconds)."""
        code = secrets.token_urlsafe(12)
        expires = self._clock() + lifetime
        key = PREFIX + "acct:invite:" + code
        await self._call("hset", key, {"expires": repr(expires), "used_by": ""})
        await self._call("expire", key, int(lifetime + INVITE_LINGER))
        return code, expires

    async def use_invite(self, code: str, name: str) -> bool:
        return bool(await self._eval(USE_INVITE, [code, name, repr(self._clock())]))

    async def return_invite(self, code: str) -> None:
        await self._call("hset", PREFIX + "acct:invite:" + code, {"used_by": ""})

    async def add_dms(self, batch: list[StoredDM]) -> None:
        args: list[str | int] = [DM_KEEP]
        for dm in batch:
            args += [name_key(dm.sender), name_key(dm.recipient), json.dumps(
                [dm.id, dm.sender, dm.recipient, dm.text, dm.ts], ensure_ascii=False)]
        await self._eval(ADD_DMS, args)

    async def dms(self, account: str, since: int | None, limit: int) -> list[StoredDM]:
        """As :meth:`~trio_chat.accounts.store.AccountsDB.dms`: after ``since``, oldest
        first, the newest ``limit``."""
        rows = await self._call("lrange", PREFIX + "acct:dms:" + name_key(account), 0, -1)
        found: dict[int, StoredDM] = {}
        for row in rows:
            number, sender, recipient, text, ts = json.loads(row)
            if since is None or number > since:
                found[int(number)] = StoredDM(int(number), sender, recipient, text, ts)
        return [found[number] for number in sorted(found)[-limit:]] if limit > 0 else []

    async def aclose(self) -> None:
        pass
