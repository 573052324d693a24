"""Baseline: grpc.aio alone (the room on asyncio, no trio, no thread hop)."""
import asyncio
import grpc
import bench_pb2, bench_pb2_grpc

members = set()

class Echo(bench_pb2_grpc.EchoServicer):
    async def Talk(self, request_iterator, context):
        q: asyncio.Queue = asyncio.Queue()
        members.add(q)
        async def reader():
            async for msg in request_iterator:
                if msg.text == "echo":
                    q.put_nowait(bench_pb2.Out(msgs=[msg]).SerializeToString())
                elif msg.text == "fan":
                    for i in range(msg.id):
                        out = bench_pb2.Out(msgs=[bench_pb2.Msg(text="x" * 40, id=i)]).SerializeToString()
                        for m in list(members):
                            m.put_nowait(out)
            q.put_nowait(None)
        rt = asyncio.ensure_future(reader())
        try:
            while (m := await q.get()) is not None:
                await context.write(m)
        finally:
            members.discard(q); rt.cancel()

async def amain():
    server = grpc.aio.server()
    handler = grpc.stream_stream_rpc_method_handler(
        Echo().Talk, request_deserializer=bench_pb2.Msg.FromString, response_serializer=None)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.Echo", {"Talk": handler})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()
asyncio.run(amain())
