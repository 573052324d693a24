"""grpc.aio server in its own thread; the room on Trio; each delivery hops threads."""
import asyncio, math, threading
import grpc, trio
import bench_pb2, bench_pb2_grpc
from room import Room, write_loop

room = Room()


class Echo(bench_pb2_grpc.EchoServicer):
    def __init__(self, token, nursery_send):
        self.token = token
        self.spawn = nursery_send

    async def Talk(self, request_iterator, context):
        loop = asyncio.get_running_loop()
        outq: asyncio.Queue = asyncio.Queue()
        holder = {}

        def start():  # on trio
            send, recv = trio.open_memory_channel(math.inf)
            holder["send"] = send
            room.members.add(send)

            async def send_batch(batch):
                done = trio.Event()
                loop.call_soon_threadsafe(outq.put_nowait, (batch, done))
                await done.wait()

            async def run():
                try:
                    await write_loop(recv, send_batch)
                finally:
                    room.members.discard(send)
                loop.call_soon_threadsafe(outq.put_nowait, None)
            self.spawn.start_soon(run)

        self.token.run_sync_soon(start)

        async def reader():
            async for msg in request_iterator:
                self.token.run_sync_soon(lambda m=msg: room.handle(holder["send"], m))
            self.token.run_sync_soon(lambda: holder["send"].close())

        rt = asyncio.ensure_future(reader())
        try:
            while (item := await outq.get()) is not None:
                batch, done = item
                for m in batch:
                    await context.write(m)
                self.token.run_sync_soon(done.set)
        finally:
            rt.cancel()


def asyncio_thread(token, nursery, ready):
    async def amain():
        server = grpc.aio.server()
        echo = Echo(token, nursery)
        handler = grpc.stream_stream_rpc_method_handler(
            echo.Talk, request_deserializer=bench_pb2.Msg.FromString, response_serializer=None)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.Echo", {"Talk": handler})])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ready.append(port)
        token.run_sync_soon(lambda: None)
        await server.wait_for_termination()
    asyncio.run(amain())


async def main():
    token = trio.lowlevel.current_trio_token()
    ready = []
    async with trio.open_nursery() as n:
        t = threading.Thread(target=asyncio_thread, args=(token, n, ready), daemon=True)
        t.start()
        while not ready:
            await trio.sleep(0.01)
        print(ready[0], flush=True)
        await trio.sleep_forever()

trio.run(main)
