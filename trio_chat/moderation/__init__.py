"""Moderation (issue 17): bans, mutes, ops, room modes and the audit log.

:mod:`.model` is the state and the rules, sans I/O; :mod:`.store` keeps them in the
server's ``--db`` SQLite file; :mod:`.commands` is ``trio-chat admin log/bans/ban/unban``.
"""
