"""A real grpcio client (``grpc.aio``, generated stubs) driven from a Trio test.

grpcio's asyncio client runs on an event loop in a thread of its own (the same
:class:`~trio_chat.transports.grpc.bridge.Bridge` the server uses); every call the
test makes hops there and back, so a test awaits a gRPC call like any Trio operation,
cancellable, and a stuck server fails the test at its bound instead of hanging it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import grpc
import trio

from tests.support.tcp import Message, matches
from tests.support.waits import WAIT
from trio_chat.transports.grpc.bridge import Bridge
from trio_chat.transports.grpc.events import client_message, json_objects
from trio_chat.v1 import chat_pb2 as pb
from trio_chat.v1 import chat_pb2_grpc

T = TypeVar("T")

#: The client side of a bytes-in, bytes-out call (to send what no stub would).
RawCall = Callable[..., Any]

#: grpcio shares one connection between channels to the same address unless told not
#: to; every client here has its own, as separate programs would.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]


class Failed(Exception):
    """A call ended with a status other than OK."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


async def _invoke(fn: Callable[[], Awaitable[T]]) -> T:
    try:
        return await fn()
    except grpc.aio.AioRpcError as error:
        raise Failed(error.code(), error.details() or "") from None


class SessionStream:
    """A ``Session`` call: events in, events out, in the test's own pace."""

    def __init__(self, client: GrpcClient, call: Any) -> None:
        self.client = client
        self.call = call
        self._unpacked: deque[pb.ServerEvent] = deque()

    async def send(self, event: pb.ClientEvent | bytes) -> None:
        await self.client.run(lambda: self.call.write(event))

    async def join(self, user: str, **options: Any) -> pb.Welcome:
        """Join, and read up to the welcome (the hello first)."""
        await self.send(pb.ClientEvent(join=pb.JoinRequest(user=user, **options)))
        event = await self.receive_until("welcome")
        return event.welcome

    async def chat(self, text: str) -> None:
        await self.send(pb.ClientEvent(chat=pb.ChatRequest(text=text)))

    async def done_writing(self) -> None:
        await self.client.run(self.call.done_writing)

    async def cancel(self) -> None:
        """Cancel the call (the server sees the client go without ``leave``: a lost
        connection)."""
        await self.client.run(made(self.call.cancel))

    async def receive(self) -> pb.ServerEvent | None:
        """The next message of the stream (a ``batch`` as it came); None when the
        stream ended OK; :class:`Failed` otherwise."""
        if self._unpacked:
            return self._unpacked.popleft()
        with trio.fail_after(WAIT):
            event = await self.client.run(self.call.read)
        if event is grpc.aio.EOF:  # type: ignore[attr-defined]
            return None
        assert isinstance(event, pb.ServerEvent)
        return event

    async def receive_until(self, kind: str, **fields: Any) -> pb.ServerEvent:
        """Skip events until one of ``kind`` whose fields match (batches unpacked: the
        events after it in its batch are kept for the next call)."""
        while True:
            event = await self.receive()
            assert event is not None, f"the stream ended before a {kind}"
            first, *rest = unpack(event)
            self._unpacked.extendleft(reversed(rest))
            if first.WhichOneof("event") == kind and all(
                getattr(getattr(first, kind), name) == value for name, value in fields.items()
            ):
                return first

    async def status(self) -> tuple[grpc.StatusCode, str]:
        with trio.fail_after(WAIT):
            code = await self.client.run(self.call.code)
            details = await self.client.run(self.call.details)
        return code, details or ""

    async def drain(self) -> list[pb.ServerEvent]:
        """Every event up to the end of the stream (then :meth:`status` says how)."""
        events: list[pb.ServerEvent] = []
        while True:
            try:
                event = await self.receive()
            except Failed:
                return events
            if event is None:
                return events
            events.extend(unpack(event))


class JsonSession:
    """A ``Session`` stream spoken in the JSON protocol's objects, as ``trio-chat join
    --grpc`` speaks it (each object sent as its ``ClientEvent``, each ``ServerEvent``
    read as the objects it stands for): the interface of the TCP and WebSocket test
    clients, so a test of the protocol runs on all three transports."""

    def __init__(self, stream: SessionStream) -> None:
        self.stream = stream
        self._pending: deque[Message] = deque()

    @classmethod
    async def open(cls, client: GrpcClient) -> JsonSession:
        """A new stream, its ``hello`` (the first event of every one) read."""
        stream = await client.raw_session()
        hello = await stream.receive()
        assert hello is not None and hello.WhichOneof("event") == "hello", hello
        return cls(stream)

    async def send(self, obj: Message) -> None:
        await self.stream.send(client_message(obj))

    async def recv(self) -> Message:
        while not self._pending:
            event = await self.stream.receive()
            assert event is not None, "the stream ended"
            self._pending.extend(json_objects(event.SerializeToString()))
        return self._pending.popleft()

    async def recv_until(self, **match: Any) -> Message:
        while True:
            message = await self.recv()
            if matches(message, match):
                return message

    async def join(self, name: str, **extra: Any) -> Message:
        await self.send({"type": "join", "user": name, **extra})
        welcome = await self.recv_until(type="welcome")
        await self.recv_until(type="system", event="join", name=name)
        return welcome

    async def ended(self) -> tuple[grpc.StatusCode, str]:
        """Skip what is left of the stream; how it ended."""
        await self.stream.drain()
        return await self.stream.status()


def unpack(event: pb.ServerEvent) -> list[pb.ServerEvent]:
    """A batch's events, or the one event."""
    if event.WhichOneof("event") == "batch":
        return list(event.batch.events)
    return [event]


class GrpcClient:
    """A channel to the server and its stub, on a loop of its own."""

    def __init__(self, bridge: Bridge, channel: grpc.aio.Channel) -> None:
        self.bridge = bridge
        self.channel = channel
        self.stub = chat_pb2_grpc.ChatStub(channel)

    async def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` (which makes a call or awaits one) on the client's loop."""
        return await self.bridge.run(_invoke(fn))

    async def who(self, **request: Any) -> pb.WhoReply:
        return await self.run(lambda: self.stub.Who(pb.WhoRequest(**request)))

    async def history(self, **request: Any) -> list[pb.ChatMessage]:
        async def collect() -> list[pb.ChatMessage]:
            return [message async for message in self.stub.History(pb.HistoryRequest(**request))]

        return await self.run(collect)

    async def post(self, *requests: pb.PostRequest) -> pb.PostSummary:
        async def requests_iter() -> AsyncIterator[pb.PostRequest]:
            for request in requests:
                yield request

        return await self.run(lambda: self.stub.Post(requests_iter()))

    async def session(self) -> SessionStream:
        call = await self.run(made(lambda: self.stub.Session(None)))
        return SessionStream(self, call)

    async def raw_session(self) -> SessionStream:
        """A ``Session`` call that writes bytes as they are (no ClientEvent encoding)."""
        method = self.channel.stream_stream(
            "/trio_chat.v1.Chat/Session", request_serializer=None,
            response_deserializer=pb.ServerEvent.FromString,
        )
        call = await self.run(made(lambda: method(None)))
        return SessionStream(self, call)

    async def raw(self, name: str, kinds: str, payloads: Sequence[bytes]) -> bytes:
        """Call ``name`` with raw request bytes; ``kinds`` is unary_unary, unary_stream
        or stream_unary. The reply's bytes (a stream's, joined)."""
        path = f"/trio_chat.v1.Chat/{name}"
        method = getattr(self.channel, kinds)(path, request_serializer=None,
                                               response_deserializer=None)

        async def call() -> bytes:
            if kinds == "unary_unary":
                reply: bytes = await method(payloads[0])
                return reply
            if kinds == "unary_stream":
                return b"".join([part async for part in method(payloads[0])])

            async def requests_iter() -> AsyncIterator[bytes]:
                for payload in payloads:
                    yield payload

            reply = await method(requests_iter())
            return reply

        return await self.run(call)


def made(make: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    """For :meth:`GrpcClient.run`: a call object made on the loop (grpcio's asyncio
    calls must be), e.g. ``await client.run(made(lambda: stub.Watch(request)))``."""

    async def made() -> T:
        return make()

    return made


@asynccontextmanager
async def grpc_client(
    target: str, credentials: grpc.ChannelCredentials | None = None
) -> AsyncIterator[GrpcClient]:
    """A client of the server at ``target`` (``host:port``), closed on the way out."""
    bridge = Bridge()
    bridge.start()
    try:

        async def open_channel() -> grpc.aio.Channel:
            if credentials is None:
                return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
            return grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)

        channel = await bridge.run(open_channel())
        try:
            yield GrpcClient(bridge, channel)
        finally:
            with trio.CancelScope(shield=True):
                await bridge.run(channel.close(None))
    finally:
        await bridge.aclose()
