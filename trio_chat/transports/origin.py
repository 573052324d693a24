"""Which web pages may open a WebSocket to the server: the Origin check, sans I/O.

A browser lets any page open a WebSocket to any host and says only, in the ``Origin``
header, which page asked. Without a check, a foreign page could chat in a visitor's
name from the visitor's own network. The policy (docs/protocol.md):

- no ``Origin`` header: a non-browser client (nc-style tools, the terminal client),
  allowed;
- the page's own origin, i.e. the scheme of this connection (``https`` over TLS) with
  the ``host:port`` the request's ``Host`` header names: allowed;
- an origin given with ``--allowed-origin`` (``*`` allows every origin): allowed;
- anything else, ``null`` included: refused with HTTP 403.

The HTTP front (trio_chat.http) applies it to each upgrade request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}

#: (scheme, lower-case host, port), the parts of an origin that identify it.
Site = tuple[str, str, int]


def parse_origin(value: str) -> Site | None:
    """``scheme://host[:port]`` as a :data:`Site`; None for ``null`` or anything that is
    not an http(s) origin (origins carry no path, query or user)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    return scheme, parts.hostname.lower(), port if port is not None else DEFAULT_PORTS[scheme]


def parse_host(host: str, scheme: str) -> Site | None:
    """A ``Host`` header (``host[:port]``, ``[v6]:port``) as the site it names under
    ``scheme``."""
    return parse_origin(f"{scheme}://{host}") if host and "/" not in host else None


class OriginPolicy:
    def __init__(self, allowed: Iterable[str] = ()) -> None:
        """``allowed``: origins from ``--allowed-origin``; ``*`` allows every one.

        Raises ``ValueError`` for an entry that is not an http(s) origin.
        """
        self.allow_any = False
        self.allowed: set[Site] = set()
        for entry in allowed:
            if entry.strip() == "*":
                self.allow_any = True
                continue
            site = parse_origin(entry)
            if site is None:
                raise ValueError(f"not an origin (scheme://host[:port]): {entry!r}")
            self.allowed.add(site)

    def allows(self, origin: str | None, host: str | None, *, secure: bool) -> bool:
        """Whether a WebSocket request with this ``Origin`` (None: no header) and
        ``Host`` may open, on a TLS (``secure``) connection or not."""
        if origin is None:
            return True
        if self.allow_any:
            return True
        site = parse_origin(origin)
        if site is None:
            return False
        if site in self.allowed:
            return True
        own = parse_host(host, "https" if secure else "http") if host else None
        return own is not None and site == own

    def allows_headers(
        self, headers: Sequence[tuple[bytes, bytes]], host: str | None, *, secure: bool
    ) -> bool:
        """:meth:`allows` for raw request headers; several ``Origin`` headers, or one
        that is not ASCII, are refused."""
        origins = [value for name, value in headers if name.lower() == b"origin"]
        if not origins:
            return self.allows(None, host, secure=secure)
        if len(origins) > 1:
            return False
        try:
            origin = origins[0].decode("ascii")
        except UnicodeDecodeError:
            return False
        return self.allows(origin, host, secure=secure)


@lru_cache(maxsize=8)
def policy(allowed: tuple[str, ...]) -> OriginPolicy:
    """The policy for a config's ``allowed_origins``, built once."""
    return OriginPolicy(allowed)


def origin_header(headers: Sequence[tuple[bytes, bytes]]) -> str:
    """The Origin header(s) for a log line."""
    found = [value.decode("ascii", "replace") for name, value in headers
             if name.lower() == b"origin"]
    return ", ".join(found)[:200] or "(none)"
