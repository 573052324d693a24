"""``trio-chat join --grpc HOST:PORT``: the session over a gRPC ``Session`` stream.

The connection looks like the other two from above (:class:`ServerConnection`): the
server's messages come up as the JSON objects the same messages are over TCP
(:func:`trio_chat.transports.grpc.events.json_objects`), so the line and full-screen
clients, and the checks of :mod:`.incoming`, need nothing of their own. grpcio's
asyncio client runs in a thread of its own (:mod:`trio_chat.transports.grpc.bridge`).
Imported only with ``--grpc``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import grpc
import trio

from ..transports.grpc.bridge import Bridge
from ..transports.grpc.events import client_message, json_objects
from .config import ClientConfig
from .incoming import Reporter
from .transport import ConnectError, Disconnected, ServerConnection

#: The Session call, bytes in and out (the bytes are ours to encode and check).
SESSION: Final = "/trio_chat.v1.Chat/Session"
#: What grpcio's ``read()`` returns at the end of the stream (not in grpc-stubs).
_EOF: Final[object] = grpc.aio.EOF  # type: ignore[attr-defined]


class GrpcConnection:
    """One ``Session`` stream: ``ClientEvent`` bytes out, ``ServerEvent`` bytes in."""

    def __init__(self, bridge: Bridge, call: Any) -> None:
        self._bridge = bridge
        self._call = call
        self._report = Reporter()

    async def receive(self) -> list[dict[str, Any]]:
        call = self._call

        async def read() -> object:
            return await call.read()

        try:
            data = await self._bridge.run(read())
        except grpc.aio.AioRpcError as error:
            raise Disconnected(_ended(error.code(), error.details())) from None
        if data is _EOF:
            raise Disconnected("server closed the connection")
        assert isinstance(data, bytes)
        try:
            return json_objects(data)
        except Exception:  # not a ServerEvent: protobuf's DecodeError, say
            self._report("a message that is not a trio_chat.v1.ServerEvent")
            return []

    async def send(self, message: Mapping[str, Any]) -> None:
        try:
            data = client_message(message)
        except ValueError:
            return  # a message the gRPC contract does not have
        call = self._call

        async def write() -> None:
            await call.write(data)

        try:
            await self._bridge.run(write())
        except (grpc.aio.AioRpcError, grpc.aio.UsageError) as error:
            raise Disconnected("connection lost") from error
        except Exception as error:  # the call is over (grpcio's InvalidStateError)
            raise Disconnected("connection lost") from error


def _ended(code: grpc.StatusCode, details: str | None) -> str:
    if code == grpc.StatusCode.UNAVAILABLE and not (details or "").startswith("shutdown"):
        return "connection lost"
    if code == grpc.StatusCode.CANCELLED:
        return "connection lost"
    return f"server closed the connection ({details or code.name})"


def _credentials(config: ClientConfig) -> grpc.ChannelCredentials | None:
    if not config.tls:
        return None
    try:
        roots = Path(config.ca).read_bytes() if config.ca else None
    except OSError as exc:
        raise ConnectError(f"cannot use --ca {config.ca}: {exc}") from None
    return grpc.ssl_channel_credentials(root_certificates=roots)


async def _connect(channel: grpc.aio.Channel) -> bool:
    """Wait for the channel to connect: False at its first failure (grpcio would
    otherwise try again and again, and a refused port would look like a slow one)."""
    state = channel.get_state(try_to_connect=True)
    while state != grpc.ChannelConnectivity.READY:
        if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                     grpc.ChannelConnectivity.SHUTDOWN):
            return False
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)
    return True


@asynccontextmanager
async def open_grpc_session(config: ClientConfig) -> AsyncIterator[ServerConnection]:
    """A ``Session`` stream to ``config.grpc``; :class:`ConnectError` if the server
    cannot be reached (or its certificate is not trusted) within the connect timeout."""
    assert config.grpc is not None
    target = config.grpc
    credentials = _credentials(config)
    bridge = Bridge()
    bridge.start()
    try:

        async def open_channel() -> grpc.aio.Channel:
            options = [("grpc.use_local_subchannel_pool", 1)]
            if credentials is None:
                return grpc.aio.insecure_channel(target, options=options)
            return grpc.aio.secure_channel(target, credentials, options=options)

        channel = await bridge.run(open_channel())
        try:
            try:
                with trio.fail_after(config.connect_timeout):
                    connected = await bridge.run(_connect(channel))
            except trio.TooSlowError:
                raise ConnectError(f"cannot connect to {config.address}: timed out") from None
            if not connected:
                raise ConnectError(
                    f"cannot connect to {config.address}: the connection failed (nothing "
                    "listening, not a gRPC port, or a TLS certificate not trusted: see --ca)"
                )

            async def open_call() -> Any:
                method = channel.stream_stream(
                    SESSION, request_serializer=None, response_deserializer=None
                )
                return method(None)

            call = await bridge.run(open_call())
            try:
                yield GrpcConnection(bridge, call)
            finally:
                bridge.to_loop(call.cancel)
        finally:
            with trio.CancelScope(shield=True):
                await bridge.run(channel.close(None))
    finally:
        await bridge.aclose()
