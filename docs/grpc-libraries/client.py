"""The same grpcio (asyncio) client against either server; prints JSON figures."""
import asyncio, json, sys, time
import grpc, psutil
import bench_pb2, bench_pb2_grpc


async def round_trip(port, n):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = bench_pb2_grpc.EchoStub(ch).Talk()
        await call.write(bench_pb2.Msg(text="echo", id=0)); await call.read()  # warm
        t = time.perf_counter()
        for i in range(n):
            await call.write(bench_pb2.Msg(text="echo", id=i))
            await call.read()
        dt = time.perf_counter() - t
        await call.done_writing()
        return dt


async def fan_out(port, m, k):
    chans = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(m)]
    calls = [bench_pb2_grpc.EchoStub(c).Talk() for c in chans]
    for c in calls:  # make sure every stream is seated
        await c.write(bench_pb2.Msg(text="echo")); await c.read()

    async def drain(c):
        got = 0
        while got < k:
            got += len((await c.read()).msgs)
    t = time.perf_counter()
    tasks = [asyncio.ensure_future(drain(c)) for c in calls]
    await calls[0].write(bench_pb2.Msg(text="fan", id=k))
    await asyncio.gather(*tasks)
    dt = time.perf_counter() - t
    for c in calls:
        await c.done_writing()
    for c in chans:
        await c.close()
    return dt


def cpu(p):
    t = p.cpu_times()
    return t.user + t.system


async def main():
    port, pid, mode, *args = sys.argv[1:]
    server = psutil.Process(int(pid))
    before = cpu(server)
    if mode == "rtt":
        n = int(args[0]); dt = await round_trip(port, n); msgs = n
    else:
        m, k = int(args[0]), int(args[1]); dt = await fan_out(port, m, k); msgs = m * k
    used = cpu(server) - before
    print(json.dumps({"mode": mode, "msgs": msgs, "seconds": dt, "per_s": msgs / dt,
                      "server_cpu_us_per_msg": used / msgs * 1e6}))

asyncio.run(main())
