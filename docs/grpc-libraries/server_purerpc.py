import sys, math
import anyio, trio
import purerpc
from purerpc.server import ConnectionHandler
from purerpc.grpclib.status import Status, StatusCode
import bench_pb2
from room import Room, write_loop

room = Room()


class Raw:
    __slots__ = ("data",)
    def __init__(self, data): self.data = data
    def SerializeToString(self): return self.data


class Handler(ConnectionHandler):
    async def request_received(self, stream):
        await stream.start_response()
        await stream.receive_event()  # headers
        stream.expect_message_type(bench_pb2.Msg)
        send, recv = trio.open_memory_channel(math.inf)
        room.members.add(send)

        async def send_batch(batch):
            for m in batch:
                await stream.send_message(Raw(m))

        async def reader():
            while (msg := await stream.receive_message()) is not None:
                room.handle(send, msg)
            send.close()

        try:
            async with trio.open_nursery() as n:
                n.start_soon(reader)
                await write_loop(recv, send_batch)
        finally:
            room.members.discard(send)
        await stream.close(Status(StatusCode.OK))


async def main():
    server = purerpc.Server(port=0)
    handler = Handler({}, server)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    print(listener.extra(anyio.abc.SocketAttribute.local_port), flush=True)
    await listener.serve(handler)

trio.run(main)
