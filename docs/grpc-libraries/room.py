"""The trio side both servers share: a room of per-stream queues, a writer per stream
that takes everything queued at once (like trio_chat's Session._write_loop). Each
broadcast is encoded once (bytes of an Out holding one Msg); BATCH joins a write's
messages into one Out (concatenated bytes are the repeated field)."""
import os
import trio
import bench_pb2

BATCH = os.environ.get("BATCH") == "1"


class Room:
    def __init__(self):
        self.members = set()

    def handle(self, me, msg):
        if msg.text == "echo":
            me.send_nowait(bench_pb2.Out(msgs=[msg]).SerializeToString())
        elif msg.text == "fan":
            for i in range(msg.id):
                out = bench_pb2.Out(msgs=[bench_pb2.Msg(text="x" * 40, id=i)]).SerializeToString()
                for m in list(self.members):
                    m.send_nowait(out)


async def write_loop(recv, send_batch):
    async for item in recv:
        batch = [item]
        while len(batch) < 512:
            try:
                batch.append(recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        await send_batch([b"".join(batch)] if BATCH else batch)
