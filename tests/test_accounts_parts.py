"""The accounts package's parts on their own: argon2id hashing in a bounded pool,
tokens (signature, expiry, key file), login throttling, and the SQLite store."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio
import trio.testing

from trio_chat.accounts.dms import DmLog
from trio_chat.accounts.passwords import MEMORY_KIB, PARALLELISM, TIME_COST, Passwords, hasher
from trio_chat.accounts.store import AccountExists, AccountsDB, AccountStore, StoredDM
from trio_chat.accounts.throttle import ACCOUNT_ATTEMPTS, ADDRESS_ATTEMPTS, Buckets, LoginThrottle
from trio_chat.accounts.tokens import LIFETIME, Tokens, load_key, secret_path


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ passwords


def test_hashes_are_argon2id_with_the_documented_parameters() -> None:
    encoded = hasher().hash("correct horse")
    assert encoded.startswith("$argon2id$")
    assert f"m={MEMORY_KIB},t={TIME_COST},p={PARALLELISM}" in encoded
    assert 10 * 1024 <= MEMORY_KIB < 100 * 1024  # tens of MiB


async def test_verify_and_the_dummy_for_unknown_accounts() -> None:
    passwords = Passwords()
    stored = await passwords.hash("correct horse")
    assert "correct horse" not in stored
    assert await passwords.verify(stored, "correct horse")
    assert not await passwords.verify(stored, "wrong horse")
    assert not await passwords.verify(None, "correct horse")
    assert not await passwords.verify("not a hash", "correct horse")
    assert not passwords.needs_rehash(stored)
    assert passwords.needs_rehash("not a hash")


async def test_a_burst_of_hashes_waits_for_the_pool() -> None:
    passwords = Passwords(at_once=2)
    results: list[str] = []

    async def one(n: int) -> None:
        results.append(await passwords.hash(f"password {n}"))

    async with trio.open_nursery() as nursery:
        for n in range(5):
            nursery.start_soon(one, n)
        await trio.testing.wait_all_tasks_blocked()
        statistics = passwords.limiter.statistics()
        assert statistics.borrowed_tokens == 2
        assert statistics.tasks_waiting == 3
    assert len(set(results)) == 5


# ------------------------------------------------------------------ tokens


def test_tokens_round_trip_and_refuse_tampering() -> None:
    clock = Clock()
    tokens = Tokens(b"k" * 32, clock=clock)
    token, expires = tokens.issue("Ann", 3)
    assert expires == int(clock.now) + LIFETIME
    claims = tokens.check(token)
    assert claims is not None and (claims.account, claims.generation) == ("Ann", 3)
    payload, _, signature = token.partition(".")
    assert tokens.check(payload + "." + signature[::-1]) is None
    assert tokens.check(payload[:-2] + "AA." + signature) is None
    assert tokens.check("garbage") is None
    assert tokens.check("é" * 10) is None
    assert tokens.check("x" * 10_000) is None
    assert Tokens(b"other key", clock=clock).check(token) is None


def test_tokens_expire() -> None:
    clock = Clock()
    tokens = Tokens(b"k" * 32, lifetime=60, clock=clock)
    token, _ = tokens.issue("Ann", 0)
    clock.now += 59
    assert tokens.check(token) is not None
    clock.now += 1
    assert tokens.check(token) is None


def test_the_generated_key_is_kept_beside_the_database(tmp_path: Path) -> None:
    db = str(tmp_path / "chat.db")
    key = load_key(None, db)
    assert len(key) == 32
    mode = stat.S_IMODE(os.stat(secret_path(db)).st_mode)
    assert mode == 0o600
    assert load_key(None, db) == key  # the same after a restart
    assert load_key("a secret", db) == b"a secret"
    assert load_key(None, ":memory:") != load_key(None, ":memory:")


# ------------------------------------------------------------------ throttle


def test_an_account_gets_three_failures_a_minute() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    for n in range(ACCOUNT_ATTEMPTS):
        assert throttle.attempt("ann", f"10.0.0.{n}") == 0
    wait = throttle.attempt("ann", "10.0.0.9")
    assert 0 < wait <= 60 / ACCOUNT_ATTEMPTS
    assert throttle.attempt("bob", "10.0.0.9") == 0  # another account is not throttled
    clock.now += wait
    assert throttle.attempt("ann", "10.0.0.9") == 0


def test_an_address_gets_ten_failures_a_minute_across_accounts() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    for n in range(ADDRESS_ATTEMPTS):
        assert throttle.attempt(f"user{n}", "10.0.0.1") == 0
    assert throttle.attempt("someone", "10.0.0.1") > 0
    assert throttle.attempt("someone", "10.0.0.2") == 0


def test_successes_do_not_count() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    for _ in range(20):
        assert throttle.attempt("ann", "10.0.0.1") == 0
        throttle.succeeded("ann", "10.0.0.1")
    assert len(throttle.accounts) == 0 and len(throttle.addresses) == 0


def test_throttle_memory_is_bounded() -> None:
    buckets = Buckets(3, 60, Clock(), max_keys=100)
    for n in range(1000):
        buckets.take(f"key{n}")
    assert len(buckets) == 100


# ------------------------------------------------------------------ store


def test_the_store_keeps_accounts_by_name_key(tmp_path: Path) -> None:
    db = AccountsDB(str(tmp_path / "chat.db"))
    db.create("Ann", "$argon2id$fake")
    account = db.get("ANN")
    assert account is not None and account.name == "Ann" and account.generation == 0
    with pytest.raises(AccountExists):
        db.create("ann", "$argon2id$other")
    assert db.set_password("Ann", "$argon2id$new") == 1
    assert db.revoke("ann") == 2
    assert db.set_admin("aNN", True) == "Ann" and db.is_admin("Ann")
    assert db.admins() == ["Ann"]
    assert db.set_admin("nobody", True) is None
    db.close()
    again = AccountsDB(str(tmp_path / "chat.db"))  # kept in the file
    assert again.names() == ["Ann"]
    again.close()


def test_invites_are_good_once_until_they_expire() -> None:
    clock = Clock()
    db = AccountsDB(":memory:", clock=clock)
    code, expires = db.create_invite(lifetime=100)
    assert expires == clock.now + 100
    assert db.use_invite(code, "Ann")
    assert not db.use_invite(code, "Bob")
    db.return_invite(code)
    assert db.use_invite(code, "Bob")
    late, _ = db.create_invite(lifetime=100)
    clock.now += 100
    assert not db.use_invite(late, "Cid")
    assert not db.use_invite("unknown", "Cid")


# ------------------------------------------------------------------ direct messages


def test_dms_are_kept_per_account_and_bounded() -> None:
    db = AccountsDB(":memory:")
    db.create("Ann", "$argon2id$a")
    db.create("Bob", "$argon2id$b")
    db.add_dms([StoredDM(n, "ann" if n % 2 else "Bob", "bob" if n % 2 else "Ann",
                         f"text {n}", "ts") for n in range(1, 11)])
    ann = db.dms("ANN", None, 100)
    assert [dm.id for dm in ann] == list(range(1, 11))
    assert (ann[0].sender, ann[0].recipient) == ("Ann", "Bob")  # as registered
    assert [dm.id for dm in db.dms("Ann", 7, 100)] == [8, 9, 10]
    assert [dm.id for dm in db.dms("Ann", None, 3)] == [8, 9, 10]  # the newest
    assert db.dms("Cid", None, 100) == []
    db.add_dms([StoredDM(11, "Ann", "Bob", "last", "ts")], keep=4)
    assert [dm.id for dm in db.dms("Bob", None, 100)] == [8, 9, 10, 11]


async def test_the_dm_log_writes_in_the_background_and_bounds_what_waits() -> None:
    db = AccountsDB(":memory:")
    log = DmLog(AccountStore(db), max_pending=2)
    async with trio.open_nursery() as nursery:
        for n in range(1, 3):
            log.record(StoredDM(n, "Ann", "Bob", f"text {n}", "ts"))
        with trio.move_on_after(0) as scope:  # full: a sender would wait
            await log.wait_writable()
        assert scope.cancelled_caught
        nursery.start_soon(log.run)
        await log.wait_writable()
        log.record(StoredDM(3, "Ann", "Bob", "text 3", "ts"))
        replayed = await log.replay("Bob", 1)
        assert [dm.id for dm in replayed] == [2, 3]
        nursery.cancel_scope.cancel()
