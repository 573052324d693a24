"""``trio-chat admin log``, ``bans``, ``ban`` and ``unban``: moderation from a shell, on
the server's database, whether the server runs or not.

They open the ``--db`` file beside a running server (the one-server lock is the
history's, not taken here; WAL and a busy timeout let both write), and a running server
notices the change within a second or two and applies it: a ban here disconnects the
banned user's live connections there.
"""

from __future__ import annotations

import re
import sys
import time
from datetime import UTC, datetime
from typing import Final

import click

from ..client.display import clean
from ..protocol import ProtocolError
from ..protocol.moderation import check_duration, check_reason, parse_network
from ..protocol.names import name_key, validate_name
from .model import AuditEntry, Kind, Sanction, new_sanction
from .store import ModerationStore, NotADatabase

#: Who the audit log names for actions taken from the command line.
CONSOLE: Final = "console"
_DURATION: Final = re.compile(r"(\d+)([smhd]?)")
_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_ROOM: Final = re.compile(r"#[A-Za-z0-9_.\-]{1,32}")


def _db_option() -> click.Option:
    from ..cli import default_db_path

    return click.Option(
        ["--db"], default=default_db_path(), show_default=True, envvar="TRIO_CHAT_DB",
        show_envvar=True, help="The server's database (its --db).",
    )


def _open(db: str) -> ModerationStore:
    if db == ":memory:":
        raise click.BadParameter("':memory:' keeps nothing to administer", param_hint="'--db'")
    try:
        return ModerationStore(db, must_exist=True)
    except NotADatabase as exc:
        raise click.ClickException(str(exc)) from None


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> int:
    match = _DURATION.fullmatch(value.strip().lower())
    if match is None:
        raise click.BadParameter("expected seconds, or a number and s, m, h or d (90m, 7d)")
    try:
        return check_duration(int(match[1]) * _UNITS[match[2]])
    except ProtocolError as exc:
        raise click.BadParameter(exc.text) from None


def _room(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    room = value.strip()
    if not room.startswith("#"):
        room = "#" + room
    if _ROOM.fullmatch(room) is None:
        raise click.BadParameter("expected a room name like #dev")
    return room.lower()


def _when(ts: float | None) -> str:
    if ts is None:
        return "until lifted"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _target(user: str | None, address: str | None) -> tuple[str | None, str | None]:
    """(name, network) of a command's target: exactly one of NAME and --address."""
    if (user is None) == (address is None):
        raise click.UsageError("give a NAME or --address (one of them)")
    try:
        if user is not None:
            return validate_name(user), None
        assert address is not None
        return None, parse_network(address)
    except ProtocolError as exc:
        raise click.BadParameter(exc.text) from None


room_option = click.option(
    "--room", callback=_room, help="A room (#dev); without it, server-wide."
)


@click.command("log")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True,
              help="The newest LIMIT actions.")
@room_option
def log_command(db: str, limit: int, room: str | None) -> None:
    """The moderation log: when, who, what, whom and why (oldest first)."""
    store = _open(db)
    try:
        entries = store.log(limit=limit, room=room)
    finally:
        store.close()
    for entry in entries:
        parts = [_when(entry.ts), entry.actor, entry.action]
        if entry.room:
            parts.append(entry.room)
        if entry.target:
            parts.append(entry.target)
        if entry.detail:
            parts.append(entry.detail)
        line = "  ".join(parts)
        if entry.reason:
            line += f"  ({entry.reason})"
        click.echo(clean(line))  # what users typed: no terminal escapes


@click.command("bans")
@room_option
@click.option("--mutes", is_flag=True, help="List mutes instead of bans.")
def bans_command(db: str, room: str | None, mutes: bool) -> None:
    """Bans (or mutes) in force: server-wide, or of one --room."""
    kind: Kind = "mute" if mutes else "ban"
    store = _open(db)
    try:
        listing = store.load(time.time()).listing(kind, room, time.time())
    finally:
        store.close()
    if not listing:
        click.echo(f"no {kind}s" + (f" in {room}" if room else " server-wide"))
    for sanction in listing:
        click.echo(clean(_describe(sanction)))


def _describe(sanction: Sanction) -> str:
    line = f"{sanction.target}  by {sanction.by}  since {_when(sanction.created)}"
    line += "  until lifted" if sanction.until is None else f"  until {_when(sanction.until)}"
    return line + (f"  ({sanction.reason})" if sanction.reason else "")


@click.command("ban")
@click.argument("user", required=False)
@click.option("--address", help="An IP address or CIDR range instead of a NAME.")
@room_option
@click.option("--duration", default="0", callback=_duration,
              help="How long: seconds, or 90m, 12h, 7d; 0 until lifted.", show_default=True)
@click.option("--reason", default="", help="Why (shown to the banned user).")
@click.option("--by", default=CONSOLE, show_default=True, help="Who the log names.")
def ban_command(
    db: str, user: str | None, address: str | None, room: str | None, duration: int,
    reason: str, by: str,
) -> None:
    """Ban NAME (or --address) from the server, or from one --room."""
    name, network = _target(user, address)
    try:
        reason = check_reason(reason)
    except ProtocolError as exc:
        raise click.BadParameter(exc.text, param_hint="'--reason'") from None
    now = time.time()
    sanction = new_sanction(
        "ban", room, by=by, reason=reason, now=now, duration=duration, user=name,
        network=network,
    )
    store = _open(db)
    try:
        stored = store.add_sanction(
            sanction, AuditEntry(now, by, "ban", room, sanction.target, reason,
                                 f"{duration}s" if duration else "until lifted"),
        )
    finally:
        store.close()
    click.echo(clean(f"banned {_describe(stored)}"))


@click.command("unban")
@click.argument("user", required=False)
@click.option("--address", help="An IP address or CIDR range instead of a NAME.")
@room_option
@click.option("--by", default=CONSOLE, show_default=True, help="Who the log names.")
def unban_command(
    db: str, user: str | None, address: str | None, room: str | None, by: str
) -> None:
    """Lift the bans of NAME (or --address) on the server, or in one --room."""
    name, network = _target(user, address)
    now = time.time()
    store = _open(db)
    try:
        found = store.load(now).find(
            "ban", room, name=name_key(name) if name is not None else None,
            network=network, now=now,
        )
        if not found:
            click.echo(f"{name or network} is not banned" + (f" in {room}" if room else ""),
                       err=True)
            sys.exit(1)
        store.remove_sanctions(
            "ban", [s.id for s in found],
            AuditEntry(now, by, "unban", room, found[0].target, ""),
        )
    finally:
        store.close()
    click.echo(f"unbanned {found[0].target}" + (f" in {room}" if room else ""))


COMMANDS: Final = (log_command, bans_command, ban_command, unban_command)
for _command in COMMANDS:
    _command.params.insert(0, _db_option())
