"""What a server's sessions ask of accounts: register, log in (password or token),
change a password, log out, and which names are registered.

The server keeps every account's name skeleton in memory (:meth:`Accounts.registered`
is asked on every guest join, synchronously: a dict look-up); the store has the rest.
One server owns a database's accounts (the history's lock), so that map is
authoritative; ``trio-chat admin`` only grants, revokes and invites.

Every failure that could tell an unknown name from a wrong password is the same
``login_failed``, after the same work (a dummy hash is verified for unknown names).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Final

import trio

from ..config import Config
from ..protocol import (
    INVITE_INVALID,
    LOGIN_FAILED,
    NAME_REGISTERED,
    NAME_TAKEN,
    PASSWORD_INVALID,
    RATE_LIMITED,
    REGISTRATION_CLOSED,
    ProtocolError,
    name_key,
    skeleton,
)
from .dms import DmLog
from .passwords import MAX_PASSWORD, MIN_PASSWORD, Passwords
from .store import AccountExists, AccountsBackend, AccountsDB, AccountStore
from .throttle import LoginThrottle
from .tokens import Tokens, load_key

log = logging.getLogger(__name__)

#: ``--registration`` modes.
OPEN: Final = "open"
CLOSED: Final = "closed"
INVITE: Final = "invite"
REGISTRATION_MODES: Final = (OPEN, CLOSED, INVITE)
#: Seconds between looks for accounts registered by the other servers of a cluster
#: (sharing the database file, or Redis).
FOLLOW_INTERVAL: Final = 2.0


def registered_error(name: str, holder: str) -> ProtocolError:
    """``name_registered``: ``name`` is an account's, or looks like ``holder``'s."""
    if name_key(holder) == name_key(name):
        return ProtocolError(NAME_REGISTERED, f"name '{name}' is registered: log in to use it")
    return ProtocolError(
        NAME_REGISTERED, f"name '{name}' looks like the registered name '{holder}'"
    )


def check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ProtocolError(
            PASSWORD_INVALID, f"a password is {MIN_PASSWORD}-{MAX_PASSWORD} characters"
        )


class Accounts:
    """The server's accounts: the store, the hashing pool, tokens and throttling."""

    def __init__(
        self,
        store: AccountsBackend,
        tokens: Tokens,
        *,
        registration: str = OPEN,
        admins: tuple[str, ...] = (),
        passwords: Passwords | None = None,
        throttle: LoginThrottle | None = None,
        names: list[str] | None = None,
    ) -> None:
        if registration not in REGISTRATION_MODES:
            raise ValueError(f"registration must be one of {REGISTRATION_MODES}")
        self.store = store
        self.tokens = tokens
        self.registration = registration
        self.passwords = passwords if passwords is not None else Passwords()
        self.throttle = throttle if throttle is not None else LoginThrottle(trio.current_time)
        self._admins = {name_key(name) for name in admins}
        #: Direct messages between accounts, kept for replay at login.
        self.dms = DmLog(store)
        #: skeleton -> account name, for every account (and registrations under way).
        self._skeletons: dict[str, str] = {}
        for name in names or ():
            self._skeletons.setdefault(skeleton(name), name)

    async def follow(self, interval: float = FOLLOW_INTERVAL, *, granted: bool = True) -> None:
        """Learn the accounts other servers register (sharing the database file on
        one machine, or Redis), every ``interval`` seconds, until cancelled; and make
        the ``--admin`` accounts admins once the store can be reached, unless
        ``granted`` already. A store that cannot be reached now (Redis away) is tried
        again at the next look."""
        last = 0
        while True:
            try:
                if not granted:
                    await self.grant_configured()
                    granted = True
                names, last = await self.store.names_since(last)
            except (ProtocolError, OSError, sqlite3.Error) as error:
                log.warning("accounts: cannot read the registered names: %s", error)
            else:
                for name in names:
                    self._skeletons.setdefault(skeleton(name), name)
            await trio.sleep(interval)

    def _known(self, name: str) -> None:
        """An account found in the store (another server of a cluster sharing the
        database may have registered it): its name is refused to guests here too."""
        self._skeletons.setdefault(skeleton(name), name)

    def registered(self, name: str) -> str | None:
        """The account ``name`` is, or looks like (the same skeleton); None if none."""
        return self._skeletons.get(skeleton(name))

    def check_guest(self, name: str) -> None:
        """Refuse a guest name that is, or looks like, a registered one."""
        holder = self.registered(name)
        if holder is not None:
            raise registered_error(name, holder)

    def _throttled(self, account: str | None, address: str) -> None:
        wait = self.throttle.attempt(account, address)
        if wait:
            raise ProtocolError(
                RATE_LIMITED,
                f"too many attempts; try again in {max(1, round(wait))} seconds",
            )

    async def register(
        self, name: str, password: str, address: str, invite: str | None = None,
        *, held: Callable[[str], str | None] = lambda name: None,
    ) -> int:
        """Create the account ``name``; its token generation. ``held``: the member
        holding ``name`` or a look-alike in the room now, if any (then name_taken)."""
        if self.registration == CLOSED:
            raise ProtocolError(REGISTRATION_CLOSED, "registration is closed on this server")
        by_invite = self.registration == INVITE
        if by_invite and not invite:
            raise ProtocolError(INVITE_INVALID, "registration is by invitation: give a code")
        check_password(password)
        self.check_guest(name)
        holder = held(name)
        if holder is not None:
            raise ProtocolError(NAME_TAKEN, f"name '{name}' is in use by '{holder}'")
        self._throttled(None, address)
        key = skeleton(name)
        self._skeletons[key] = name  # reserved while hashing: a look-alike waits its turn
        spent = created = False
        try:
            if by_invite:
                spent = await self.store.use_invite(invite or "", name)
                if not spent:
                    raise ProtocolError(INVITE_INVALID, "that code is unknown, used or expired")
            password_hash = await self.passwords.hash(password)
            try:
                await self.store.create(name, password_hash,
                                     admin=name_key(name) in self._admins)
            except AccountExists as exists:
                raise registered_error(name, exists.holder) from None
            created = True
        finally:
            if not created:
                del self._skeletons[key]
                if spent:
                    with trio.CancelScope(shield=True):
                        await self.store.return_invite(invite or "")
        log.info("account %s registered from %s", name, address,
                 extra={"event": "register", "user": name, "peer": address})
        return 0

    async def login(self, name: str, password: str, address: str) -> tuple[str, int]:
        """Check a password: the account's name and generation, or ``login_failed``."""
        self._throttled(name_key(name), address)
        account = await self.store.get(name)
        ok = False
        if len(password) <= MAX_PASSWORD:
            ok = await self.passwords.verify(account.hash if account else None, password)
        if not ok or account is None:
            log.info("login failed for %s from %s", name, address,
                     extra={"event": "login_failed", "user": name, "peer": address})
            raise ProtocolError(LOGIN_FAILED, "wrong name or password")
        self.throttle.succeeded(name_key(name), address)
        self._known(account.name)
        if self.passwords.needs_rehash(account.hash):
            rehashed = await self.passwords.hash(password)
            await self.store.rehash(account.name, account.hash, rehashed)
        return account.name, account.generation

    async def login_token(self, token: str, address: str) -> tuple[str, int]:
        """Check a token: its account's name and generation, or ``login_failed``."""
        self._throttled(None, address)
        claims = self.tokens.check(token)
        account = None
        if claims is not None:
            account = await self.store.get(claims.account)
        if claims is None or account is None or account.generation != claims.generation:
            log.info("token login failed from %s", address,
                     extra={"event": "login_failed", "peer": address})
            raise ProtocolError(LOGIN_FAILED, "the token is expired, revoked or not valid")
        self.throttle.succeeded(None, address)
        self._known(account.name)
        return account.name, account.generation

    async def change_password(self, account: str, old: str, new: str, address: str) -> int:
        """Replace the password (the old one checked first); the new generation: every
        token issued before is revoked."""
        check_password(new)
        await self.login(account, old, address)
        password_hash = await self.passwords.hash(new)
        generation = await self.store.set_password(account, password_hash)
        log.info("password changed for %s", account,
                 extra={"event": "password", "user": account, "peer": address})
        return generation

    async def logout(self, account: str) -> None:
        """Revoke every token of ``account``."""
        await self.store.revoke(account)

    def issue_token(self, account: str, generation: int) -> tuple[str, int]:
        return self.tokens.issue(account, generation)

    async def is_admin(self, account: str) -> bool:
        """Whether ``account`` is a server admin now (``trio-chat admin grant`` may
        have changed it on the running server's database)."""
        return await self.store.is_admin(account)

    async def grant_configured(self) -> None:
        """``--admin NAME``: make the named accounts admins (the ones not registered
        yet become admins when they register)."""
        for name in self._admins:
            await self.store.set_admin(name, True)


@asynccontextmanager
async def open_accounts(
    config: Config, store: AccountsBackend | None = None
) -> AsyncIterator[Accounts]:
    """The accounts of ``config.db`` (tables created if new), or of ``store`` (Redis,
    for a cluster), for one server run."""
    if store is None:
        db = await trio.to_thread.run_sync(AccountsDB, config.db)
        store = AccountStore(db)
    try:
        key = await trio.to_thread.run_sync(load_key, config.secret, config.db)
        granted = True
        try:
            names = await store.names()
            accounts = Accounts(
                store, Tokens(key), registration=config.registration,
                admins=config.admins, names=names,
            )
            await accounts.grant_configured()
            log.info("accounts: %d registered, registration %s", len(names),
                     config.registration)
        except ProtocolError as error:  # Redis away at the start: learnt when back
            log.warning("accounts: %s; registered names are learnt once it is back",
                        error.text)
            accounts = Accounts(store, Tokens(key), registration=config.registration,
                                admins=config.admins)
            granted = False
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accounts.dms.run)
            if config.redis:
                nursery.start_soon(partial(accounts.follow, granted=granted))
            try:
                yield accounts
            finally:
                with trio.CancelScope(shield=True):
                    await accounts.dms.flush()
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()
