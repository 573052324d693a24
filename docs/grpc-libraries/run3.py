"""The figures of docs/grpc.md: every server, unbatched then batched (BATCH=1)."""
import os, sys
sys.argv = ["x"]
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py")).read().split("for server in")[0])
servers = ["server_purerpc.py", "server_grpcio.py", "server_grpcio_pure.py"]
for batch in ("0", "1"):
    os.environ["BATCH"] = batch
    print("BATCH", batch, flush=True)
    for server in servers:
        if batch == "0":
            run(server, "rtt", "5000")
            run(server, "fan", "20", "2000")
            run(server, "fan", "100", "400")
        else:
            run(server, "fan", "20", "20000")
            run(server, "fan", "100", "4000")
