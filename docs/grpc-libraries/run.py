"""Each server (a subprocess) against the same grpcio client (client.py): median of
five runs of each measurement. PYTHON: a virtualenv with trio, purerpc, grpcio,
grpcio-tools and psutil (docs/grpc.md, "Choosing the library")."""
import json, os, subprocess, sys, statistics
PY = os.environ.get("PYTHON", sys.executable)
HERE = os.path.dirname(os.path.abspath(__file__))

def run(server, mode, *args, repeats=5):
    out = []
    for _ in range(repeats):
        p = subprocess.Popen([PY, server], stdout=subprocess.PIPE, text=True, cwd=HERE)
        port = p.stdout.readline().strip()
        r = subprocess.run([PY, "client.py", port, str(p.pid), mode, *args], capture_output=True, text=True, cwd=HERE)
        p.kill(); p.wait()
        if r.returncode:
            print(r.stderr); raise SystemExit(1)
        out.append(json.loads(r.stdout))
    per_s = statistics.median(o["per_s"] for o in out)
    cpu = statistics.median(o["server_cpu_us_per_msg"] for o in out)
    print(f"{server:20} {mode} {args}: {per_s:9.0f} msg/s  server CPU {cpu:6.1f} us/msg  (median of {repeats})", flush=True)

for server in ("server_purerpc.py", "server_grpcio.py"):
    run(server, "rtt", "3000")
    run(server, "fan", "20", "500")
    run(server, "fan", "100", "100")
