"""``trio-chat admin``: operating a server from a shell, on its ``--db`` database,
whether it is running or not. Loaded lazily by :mod:`trio_chat.cli` (like ``bench``):
``serve`` and ``join`` never import it.

The moderation commands (``log``, ``bans``, ``ban``, ``unban``) live in
:mod:`trio_chat.moderation.commands`.
"""

from __future__ import annotations

import click

from ..moderation.commands import COMMANDS as MODERATION_COMMANDS


@click.group("admin")
def admin() -> None:
    """Administer a server's database: moderation log, bans."""


for _command in MODERATION_COMMANDS:
    admin.add_command(_command)
