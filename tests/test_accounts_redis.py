"""The accounts' Redis backend (:class:`trio_chat.cluster.accounts.RedisAccounts`) on
a real redis-server: what the SQLite store does, the same way, and its bounds."""

from __future__ import annotations

from collections.abc import AsyncIterator

import coredis
import pytest

from tests.support.redis import RedisServer
from trio_chat.accounts.store import AccountExists, StoredDM
from trio_chat.cluster.accounts import DM_KEEP, RedisAccounts
from trio_chat.protocol import ProtocolError

NOW = 1_700_000_000.0


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[coredis.Redis[str]]:
    async with coredis.Redis.from_url(redis_server.url, decode_responses=True) as redis:
        yield redis


def backend(client: coredis.Redis[str], now: list[float] | None = None) -> RedisAccounts:
    clock = now if now is not None else [NOW]
    return RedisAccounts(lambda: client, clock=lambda: clock[0])


async def test_an_account_is_one_per_name_and_look_alike(client: coredis.Redis[str]) -> None:
    accounts = backend(client)
    await accounts.create("Ann", "hash-1")
    with pytest.raises(AccountExists) as same:
        await accounts.create("ANN", "hash-2")
    assert same.value.holder == "Ann"
    with pytest.raises(AccountExists) as alike:
        await accounts.create("\u0410nn", "hash-2")  # Cyrillic A
    assert alike.value.holder == "Ann"
    account = await accounts.get("ann")
    assert account is not None and (account.name, account.hash, account.generation,
                                     account.admin) == ("Ann", "hash-1", 0, False)
    assert await accounts.get("Bob") is None
    assert await accounts.names() == ["Ann"]
    await accounts.create("Bob", "hash-3", admin=True)
    assert await accounts.names_since(1) == (["Bob"], 2)
    assert await accounts.names_since(2) == ([], 2)
    assert await accounts.admins() == ["bob"]


async def test_generations_hashes_and_admins(client: coredis.Redis[str]) -> None:
    accounts = backend(client)
    await accounts.create("Ann", "old")
    assert await accounts.revoke("Ann") == 1
    assert await accounts.set_password("ann", "new") == 2
    await accounts.rehash("Ann", "old", "stale")  # not the hash any more: kept
    account = await accounts.get("Ann")
    assert account is not None and (account.hash, account.generation) == ("new", 2)
    await accounts.rehash("Ann", "new", "newer")  # tokens stay good
    account = await accounts.get("Ann")
    assert account is not None and (account.hash, account.generation) == ("newer", 2)
    assert await accounts.revoke("Nobody") == -1
    assert await accounts.set_password("Nobody", "x") == -1
    assert await accounts.set_admin("Nobody", True) is None
    version = int(await client.get("trio-chat:mod:version") or 0)
    assert await accounts.set_admin("ann", True) == "Ann"
    assert await accounts.is_admin("ANN")
    # Every server's moderation looks at this version, and reloads its admins.
    assert int(await client.get("trio-chat:mod:version") or 0) == version + 1
    assert await accounts.set_admin("Ann", False) == "Ann"
    assert not await accounts.is_admin("Ann")
    assert await accounts.admins() == []


async def test_an_invite_is_good_once_until_it_expires(client: coredis.Redis[str]) -> None:
    now = [NOW]
    accounts = backend(client, now)
    code, expires = await accounts.create_invite(3600)
    assert expires == NOW + 3600
    assert await client.ttl(f"trio-chat:acct:invite:{code}") > 0  # Redis forgets it
    assert not await accounts.use_invite("not-a-code", "Ann")
    assert await accounts.use_invite(code, "Ann")
    assert not await accounts.use_invite(code, "Bob")  # spent
    await accounts.return_invite(code)  # Ann's registration failed after all
    now[0] = expires
    assert not await accounts.use_invite(code, "Bob")  # expired
    now[0] = NOW
    assert await accounts.use_invite(code, "Bob")


async def test_dms_are_kept_per_account_and_bounded(client: coredis.Redis[str]) -> None:
    accounts = backend(client)
    await accounts.add_dms([StoredDM(1, "Ann", "Bob", "hi", "t1"),
                            StoredDM(2, "Bob", "Ann", "hello", "t2"),
                            StoredDM(3, "Ann", "Ann", "a note", "t3"),
                            StoredDM(4, "Cid", "Bob", "psst", "t4")])
    assert [dm.id for dm in await accounts.dms("ann", None, 50)] == [1, 2, 3]  # once each
    assert [dm.id for dm in await accounts.dms("Bob", None, 50)] == [1, 2, 4]
    assert [dm.id for dm in await accounts.dms("Bob", 1, 50)] == [2, 4]
    assert [dm.id for dm in await accounts.dms("Bob", None, 2)] == [2, 4]  # the newest
    assert await accounts.dms("Bob", None, 0) == []
    # Written out of id order (two servers' batches): replayed in id order.
    await accounts.add_dms([StoredDM(6, "Bob", "Cid", "later", "t6")])
    await accounts.add_dms([StoredDM(5, "Cid", "Bob", "sooner", "t5")])
    assert [dm.text for dm in await accounts.dms("Bob", 4, 50)] == ["sooner", "later"]
    many = [StoredDM(100 + i, "Dan", "Eve", str(i), "t") for i in range(DM_KEEP + 10)]
    await accounts.add_dms(many)
    kept = await accounts.dms("Eve", None, DM_KEEP + 100)
    assert len(kept) == DM_KEEP and kept[0].id == 110  # the oldest went first
    assert await client.llen("trio-chat:acct:dms:dan") == DM_KEEP


async def test_redis_away_is_not_permitted_saying_so() -> None:
    accounts = RedisAccounts(lambda: None)
    with pytest.raises(ProtocolError) as refused:
        await accounts.get("Ann")
    assert refused.value.code == "not_permitted"
    assert "Redis is unreachable" in refused.value.text
