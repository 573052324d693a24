"""A session's account events: ``register``, ``login``, ``logout``, ``password``.

A register or a login is a ``join`` with credentials: it claims the account's name
and enters the room (or renames the guest this connection was), answered by the same
``welcome`` (plus ``"account"``), then a ``token``. Credentials over a connection
without TLS get a one-time ``system`` notice that they travelled in clear, or with
``--require-tls-for-login`` the error ``tls_required`` (nothing is checked).

:class:`Logins` is one connection's: what it is logged in to (``member.account``),
and whether it was told about cleartext already.
"""

from __future__ import annotations

import logging
from typing import Final

from .. import protocol
from ..config import Config
from ..protocol import (
    NAME_INVALID,
    NOT_LOGGED_IN,
    TLS_REQUIRED,
    UNKNOWN_TYPE,
    Login,
    Logout,
    Password,
    ProtocolError,
    Register,
)
from .room import Member
from .rooms import Rooms

log = logging.getLogger(__name__)

#: The ``system`` event of the one-time notice about credentials sent in clear.
CLEARTEXT: Final = "insecure"
CLEARTEXT_TEXT: Final = (
    "your password or token travelled over a connection without TLS: anyone on the "
    "path could read it"
)

AccountEvent = Register | Login | Logout | Password


class Logins:
    """One connection's account events, acted on for its ``member`` in ``room``."""

    def __init__(self, rooms: Rooms, member: Member, config: Config, address: str) -> None:
        self.room = rooms
        self.member = member
        self.config = config
        self.address = address
        self._told_cleartext = False

    @property
    def account(self) -> str | None:
        return self.member.account

    def check_guest_name(self, name: str) -> None:
        """Before a ``join`` (or ``/nick``): see :func:`check_guest_name`."""
        check_guest_name(self.room, self.member, name)

    async def handle(self, event: AccountEvent) -> None:
        accounts = self.room.accounts
        if accounts is None:
            raise ProtocolError(UNKNOWN_TYPE, "this server has no accounts")
        if isinstance(event, Logout):
            await self._logout()
            return
        self._cleartext()
        member = self.member
        if isinstance(event, Password):
            account = member.account
            if account is None:
                raise ProtocolError(NOT_LOGGED_IN, "log in first to change your password")
            generation = await accounts.change_password(
                account, event.old, event.new, self.address
            )
            member.deliver(protocol.system(
                "password", account, "password changed: every earlier token is revoked",
                self.room.count, protocol.timestamp(),
            ))
            member.deliver(protocol.token_message(*accounts.issue_token(account, generation)))
            return
        if isinstance(event, Register):

            def held(name: str) -> str | None:
                holder = self.room.holder(name)
                return holder.name if holder is not None and holder is not member else None

            generation = await accounts.register(
                event.user, event.password, self.address, event.invite, held=held
            )
            account = event.user
        elif event.token is not None:
            account, generation = await accounts.login_token(event.token, self.address)
        else:
            assert event.user is not None and event.password is not None
            account, generation = await accounts.login(event.user, event.password, self.address)
        await self._enter(account, generation, event)

    def _cleartext(self) -> None:
        if self.config.tls_cert is not None:
            return
        if self.config.require_tls_for_login:
            raise ProtocolError(
                TLS_REQUIRED, "this server takes passwords and tokens only over TLS"
            )
        if not self._told_cleartext:
            self._told_cleartext = True
            self.member.deliver(protocol.system(
                CLEARTEXT, protocol.SYSTEM_USER, CLEARTEXT_TEXT, self.room.count,
                protocol.timestamp(),
            ))

    async def _enter(self, account: str, generation: int, event: Register | Login) -> None:
        """Take the account's name in the room (joining, renaming the guest this was,
        or beside the account's other connections), then send a fresh token."""
        room, member = self.room, self.member
        accounts = room.accounts
        assert accounts is not None
        previous = member.account
        if previous is not None and previous != account:
            self._leave()  # logged in to another account: that login ends here
        await room.claim(account)  # maybe a Redis round trip
        try:
            if not member.joined:
                member.batch = event.batch
            member.account = account
            try:
                room.join(member, account, event.since, room=event.room,
                          resumable=not event.plain)
            except ProtocolError:
                member.account = previous if member.name is not None else None
                raise
        finally:
            room.unclaim(account)
        log.info("login %s from %s", account, self.address,
                 extra={"event": "login", "user": account, "peer": self.address})
        # The direct messages kept for the account (after ``since``), to this
        # connection: after its rooms' welcomes and replays.
        for dm in await accounts.dms.replay(account, event.since):
            member.deliver(protocol.direct(dm.sender, dm.recipient, dm.text, dm.ts, dm.id,
                                           history=True))
        member.deliver(protocol.token_message(*accounts.issue_token(account, generation)))

    def _leave(self) -> None:
        """This connection leaves the room and is no longer logged in."""
        member = self.member
        self.room.leave(member)
        member.name = None
        member.account = None

    async def _logout(self) -> None:
        member = self.member
        account = member.account
        accounts = self.room.accounts
        if account is None or accounts is None:
            raise ProtocolError(NOT_LOGGED_IN, "you are not logged in")
        self._leave()
        await accounts.logout(account)
        log.info("logout %s from %s", account, self.address,
                 extra={"event": "logout", "user": account, "peer": self.address})
        member.deliver(protocol.system(
            "logout", account,
            f"logged out of {account}; its tokens are revoked (/nick NAME to join as a guest)",
            self.room.count, protocol.timestamp(),
        ))


def check_guest_name(rooms: Rooms, member: Member, name: str) -> None:
    """Before a ``join`` (or ``/nick``): a guest may not take a registered name or
    a look-alike; a logged-in connection keeps its account's name. (A function: a
    join needs no :class:`Logins`, which a connection gets only when it uses one.)"""
    account = member.account
    if account is not None:
        if name != account:
            raise ProtocolError(
                NAME_INVALID,
                f"you are logged in as '{account}': your name is the account's "
                "(log out first to use another)",
            )
        return
    accounts = rooms.accounts
    if accounts is not None:
        accounts.check_guest(name)
