"""gRPC (``--grpc-port``): the Protobuf contract of ``proto/trio_chat/v1/chat.proto``
over grpcio, into the same room as TCP and WebSocket.

Imported only when the server is given ``--grpc-port`` or ``trio-chat join`` ``--grpc``
(grpcio and protobuf stay off both import paths otherwise), a module at a time: the
client needs :mod:`.events` and :mod:`.bridge`, not the server. :mod:`.server` binds
and serves, :mod:`.calls` holds each call's two sides (the loop's and Trio's),
:mod:`.bridge` the thread grpcio's asyncio loop runs in, :mod:`.events` the Protobuf
form of the protocol's messages. docs/grpc.md says why grpcio, in a thread, rather
than a library native to Trio.
"""
