"""Who the WebSocket port answers, sans I/O: the Host check and the Origin check.

**Host** (DNS rebinding). A page on ``attacker.example`` whose name the attacker then
points at 127.0.0.1 (or an intranet address) is, to the browser, same-origin with
``http://attacker.example:PORT``: it would get the page, and pass the Origin check
below, which takes the ``Host`` header as the server's own name. So the port answers
only the ``Host`` names it is meant to have (:class:`HostPolicy`): those given with
``--allowed-host``; with none, on a loopback address, only ``localhost``,
``127.0.0.1`` and ``[::1]``; with none on another address, any (the server logs once
that ``--allowed-host`` would protect it). Others get HTTP 421 (Misdirected Request).

**Origin**.
A browser lets any page open a WebSocket to any host and says only, in the ``Origin``
header, which page asked. Without a check, a foreign page could chat in a visitor's
name from the visitor's own network. The policy (docs/protocol.md):

- no ``Origin`` header: a non-browser client (nc-style tools, the terminal client),
  allowed;
- the page's own origin, i.e. the scheme of this connection (``https`` over TLS) with
  the ``host:port`` the request's ``Host`` header names: allowed;
- an origin given with ``--allowed-origin`` (``*`` allows every origin): allowed;
- anything else, ``null`` included: refused with HTTP 403.

The HTTP front (trio_chat.transports.http) applies the Host check to every request,
and the Origin check to each upgrade request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Final
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


#: The names a server bound to a loopback address answers when no --allowed-host says.
LOOPBACK_NAMES: Final = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """Whether a bind address reaches only this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` or ``[v6][:port]`` as (lower-case host, port); None if malformed."""
    try:
        parts = urlsplit(f"//{value.strip()}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.path or parts.query or parts.fragment or parts.username:
        return None
    return parts.hostname.lower(), port


class HostPolicy:
    """The ``Host`` values the WebSocket port answers (see the module doc)."""

    def __init__(self, allowed: Iterable[str], bind_host: str) -> None:
        """``allowed``: entries of ``--allowed-host``, each ``name`` (any port),
        ``name:port``, or ``*`` (any Host). Raises ``ValueError`` for a malformed one."""
        self.names: set[str] = set()
        self.sites: set[tuple[str, int]] = set()
        self.allow_any = False
        entries = list(allowed)
        for entry in entries:
            if entry.strip() == "*":
                self.allow_any = True
                continue
            split = _split_host(entry)
            if split is None:
                raise ValueError(f"not a host name (name or name:port): {entry!r}")
            name, port = split
            if port is None:
                self.names.add(name)
            else:
                self.sites.add((name, port))
        if not entries:
            if is_loopback(bind_host):
                self.names.update(LOOPBACK_NAMES)
            else:
                self.allow_any = True
        #: No --allowed-host, and a non-loopback bind: every Host is answered.
        self.unprotected = not entries and self.allow_any

    def allows(self, host: str | None) -> bool:
        """Whether to answer a request with this ``Host`` header (None: no header, an
        HTTP/1.0 client; browsers always send one)."""
        if self.allow_any or host is None:
            return True
        split = _split_host(host)
        if split is None:
            return False
        name, port = split
        return name in self.names or (port is not None and (name, port) in self.sites)


@lru_cache(maxsize=8)
def host_policy(allowed: tuple[str, ...], bind_host: str) -> HostPolicy:
    """The policy for a config's ``allowed_hosts`` and bind address, built once."""
    return HostPolicy(allowed, bind_host)


@lru_cache(maxsize=8)
def policy(allowed: tuple[str, ...]) -> OriginPolicy:
    """The policy for a config's ``allowed_origins``, built once."""
    return OriginPolicy(allowed)


def origin_header(headers: Sequence[tuple[bytes, bytes]]) -> str:
    """The Origin header(s) for a log line."""
    found = [value.decode("ascii", "replace") for name, value in headers
             if name.lower() == b"origin"]
    return ", ".join(found)[:200] or "(none)"
