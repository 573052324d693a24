"""Accounts: names people own (issue 17, the accounts half).

- :mod:`.passwords`: argon2id hashing in a bounded worker pool, off the event loop;
- :mod:`.tokens`: short-lived HMAC-signed login tokens, revoked per account;
- :mod:`.throttle`: login attempts throttled per account and per address;
- :mod:`.store`: the accounts and invites tables in the server's ``--db``;
- :mod:`.service`: what the server's sessions call (register, log in, tokens).

Nothing here ever logs a password, a hash or a token.
"""
