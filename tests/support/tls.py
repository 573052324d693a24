"""A throwaway CA (trustme) and a server certificate, as files and contexts."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trustme
from trio_websocket import WebSocketConnection

from trio_chat import Config

from .tcp import TcpClient
from .ws import ws_over


class TlsFiles:
    """A throwaway CA (trustme) and a server certificate for 127.0.0.1/localhost,
    written as PEM files the way ``--tls-cert``/``--tls-key``/``--ca`` take them."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        issued = self.ca.issue_cert("127.0.0.1", "localhost")
        self.cert = directory / "cert.pem"
        self.key = directory / "key.pem"
        self.ca_pem = directory / "ca.pem"
        issued.cert_chain_pems[0].write_to_path(str(self.cert))
        for blob in issued.cert_chain_pems[1:]:
            blob.write_to_path(str(self.cert), append=True)
        issued.private_key_pem.write_to_path(str(self.key))
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        self.server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        issued.configure_cert(self.server_context)

    def server_config(self, config: Config) -> Config:
        """``config`` with this certificate on both ports."""
        return dataclasses.replace(config, tls_cert=str(self.cert), tls_key=str(self.key))

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    async def tcp_client(self, port: int) -> TcpClient:
        stream = await trio.open_ssl_over_tcp_stream(
            "127.0.0.1", port, ssl_context=self.client_context()
        )
        return TcpClient(stream)

    @asynccontextmanager
    async def ws_client(
        self, port: int, path: str = "/", **kwargs: Any
    ) -> AsyncIterator[WebSocketConnection]:
        """Like :func:`.ws.ws_client`, over wss:// (we own the socket here too)."""
        stream = await trio.open_ssl_over_tcp_stream(
            "127.0.0.1", port, ssl_context=self.client_context(), https_compatible=True
        )
        async with ws_over(stream, f"127.0.0.1:{port}", path, **kwargs) as ws:
            yield ws
