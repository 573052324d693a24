"""``trio-chat admin``: manage a server's accounts in its database, stopped or running.

The commands open the ``--db`` file with SQLite directly: they take no lock (the
one-server-per-database lock is the server's, and a running server's database is in
WAL mode: SQLite serializes the writes, readers never wait). A running server sees
a grant or a revoke at the next check (it reads admin rights from the database each
time), and an invite code at once.

- ``admin grant NAME`` / ``admin revoke NAME``: make an account a server admin, or
  not (accounts only: a guest cannot be one; ``serve --admin NAME`` grants at start);
- ``admin invite``: a registration code for ``serve --registration invite``.

With ``--redis URL`` (a cluster's, ``serve --redis``) these work on the accounts in
that Redis instead of a ``--db`` file; every server of the cluster sees a grant or a
revoke within a second.

Other modules add their commands to :data:`admin` (moderation: ``admin log``...), with
:data:`db_option` for ``--db`` and :func:`prepare_database` / :func:`is_trio_chat_db`
before they open the file.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from ..accounts.store import INVITE_LIFETIME, AccountsDB
from ..config import redacted_url

if TYPE_CHECKING:
    from ..cluster.accounts import RedisAccounts

_T = TypeVar("_T")


def _default_db() -> str:
    from ..cli import default_db_path

    return default_db_path()


db_option = click.option(
    "--db", default=_default_db, envvar="TRIO_CHAT_DB", show_envvar=True,
    show_default="the server's default",
    help="The server's history database (serve --db).",
)


def is_trio_chat_db(path: str) -> bool:
    """``path`` is a database a trio-chat server has used (its history schema is in)."""
    if not Path(path).is_file():
        return False
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError:
        return False
    finally:
        conn.close()
    return bool(version)


def prepare_database(path: str) -> None:
    """A new database gets the history's schema first (a server then takes it as its
    own): as ``serve --db PATH`` would make it."""
    if is_trio_chat_db(path):
        return
    if Path(path).exists() and Path(path).stat().st_size:
        raise click.ClickException(f"{path} is not a trio-chat database")
    import trio

    from ..config import Config
    from ..history.sqlite import open_history

    async def create() -> None:
        async with open_history(Config(db=path)):
            pass

    try:
        trio.run(create)
    except Exception as error:  # one line, whatever the store says
        raise click.ClickException(str(error)) from None


def _open(path: str, *, create: bool = False) -> AccountsDB:
    if create:
        prepare_database(path)
    elif not is_trio_chat_db(path):
        raise click.ClickException(
            f"no trio-chat database at {path} (start the server with --db {path} once)"
        )
    try:
        return AccountsDB(path)
    except sqlite3.Error as error:
        raise click.ClickException(f"cannot use {path}: {error}") from None


@click.group()
def admin() -> None:
    """Manage a server's accounts and moderation in its database (stopped or running)."""


redis_option = click.option(
    "--redis", default=None, envvar="TRIO_CHAT_REDIS", show_envvar=True,
    help="The cluster's Redis (serve --redis): its accounts are there, not in --db.",
)


def _on_redis(url: str, work: Callable[[RedisAccounts], Awaitable[_T]]) -> _T:
    """``work`` on the accounts in the Redis at ``url`` (a ClickException if it cannot
    be used)."""
    import trio

    from ..cluster.accounts import RedisAccounts
    from ..cluster.link import LINK_ERRORS, connect_redis
    from ..errors import first_leaf
    from ..protocol import ProtocolError

    async def run() -> _T:
        async with connect_redis(url) as client:
            return await work(RedisAccounts(lambda: client))

    failure: BaseException | None = None
    try:
        return trio.run(run)
    except* ProtocolError as group:
        failure = first_leaf(group)
    except* LINK_ERRORS as group:
        failure = first_leaf(group)
    raise click.ClickException(f"cannot use Redis at {redacted_url(url)}: {failure}")


@admin.command()
@click.argument("name")
@db_option
@redis_option
def grant(name: str, db: str, redis: str | None) -> None:
    """Make the account NAME a server admin."""
    _set_admin(name, db, redis, True)


@admin.command()
@click.argument("name")
@db_option
@redis_option
def revoke(name: str, db: str, redis: str | None) -> None:
    """Make the account NAME no longer a server admin."""
    _set_admin(name, db, redis, False)


def _set_admin(name: str, db: str, redis: str | None, admin: bool) -> None:
    if redis:
        # Every server of the cluster sees it within a second (moderation's version).
        account = _on_redis(redis, lambda accounts: accounts.set_admin(name, admin))
        where = redacted_url(redis)
    else:
        accounts = _open(db)
        try:
            account = accounts.set_admin(name, admin)
        finally:
            accounts.close()
        where = db
    if account is None:
        click.echo(f"no account {name!r} in {where} (only accounts can be admins)", err=True)
        sys.exit(1)
    click.echo(f"{account} is {'a server admin' if admin else 'no longer a server admin'}")


@admin.command()
@db_option
@click.option("--hours", type=click.FloatRange(0, min_open=True),
              default=INVITE_LIFETIME / 3600, show_default=True,
              help="Hours the code is good for.")
@redis_option
def invite(db: str, hours: float, redis: str | None) -> None:
    """Print a new invite code (one registration, for serve --registration invite)."""
    if redis:
        code, expires = _on_redis(redis, lambda accounts: accounts.create_invite(hours * 3600))
    else:
        accounts = _open(db, create=True)
        try:
            code, expires = accounts.create_invite(hours * 3600)
        finally:
            accounts.close()
    until = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%d %H:%M UTC")
    click.echo(code)
    click.echo(f"good for one registration until {until}", err=True)


def _add_moderation() -> None:
    """``admin log``, ``bans``, ``ban``, ``unban``: :mod:`trio_chat.moderation.commands`."""
    from ..moderation.commands import COMMANDS

    for command in COMMANDS:
        admin.add_command(command)


_add_moderation()

