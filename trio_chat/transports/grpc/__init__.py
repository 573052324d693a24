"""gRPC (``--grpc-port``): the Protobuf contract of ``proto/trio_chat/v1/chat.proto``
over grpcio, into the same room as TCP and WebSocket.

Imported only when the server is given ``--grpc-port`` (grpcio and protobuf stay off
the server's import path otherwise). :mod:`.server` binds and serves, :mod:`.calls`
holds each call's two sides (the loop's and Trio's), :mod:`.bridge` the thread grpcio's
asyncio loop runs in, :mod:`.events` the Protobuf form of the protocol's messages.
docs/grpc.md says why grpcio, in a thread, rather than a library native to Trio.
"""

from .server import GrpcServer, open_grpc

__all__ = ["GrpcServer", "open_grpc"]
