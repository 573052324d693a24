"""The benchmarks' own parts (the loader's cheap accounting, the reports, where clients
go in cluster mode), and every benchmark script run once at a tiny size in a
subprocess, as a user runs it, so that none of them can rot unnoticed.

The runs check that each script reports figures and, for the fan-out runs, that
nothing was lost; they never assert how fast anything is (speed is measured by running
the benchmarks, docs/bench.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.support.redis import redis_server_or_skip
from tests.support.tcp import free_port
from trio_chat import cli
from trio_chat.bench import loader, report, runner, servers, store, targets
from trio_chat.bench import redis_round_trip as round_trip

#: A peer for the fan-out run: a chat relay on TCP that sends every line it receives to
#: every client, the sender included (what the seed does, minus the timestamp).
RELAY = """
import sys, trio

queues = {}

async def handle(stream):
    send, receive = trio.open_memory_channel(float("inf"))
    queues[stream] = send

    async def write():
        async for data in receive:
            await stream.send_all(data)

    partial = b""
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            async for data in stream:
                lines, _, partial = (partial + data).rpartition(b"\\n")
                if lines:
                    for queue in list(queues.values()):
                        queue.send_nowait(lines + b"\\n")
            nursery.cancel_scope.cancel()
    except trio.BrokenResourceError:
        pass
    finally:
        del queues[stream]

trio.run(trio.serve_tcp, handle, int(sys.argv[1]))
"""

#: The tables' first lines, exactly as `trio-chat bench` prints them.
FANOUT_HEADER = (
    "server               deliveries/s (min-max) per CPU-s  p50 ms  p99 ms  max ms  lost "
    "srv CPU peak MB loader"
)
SCALE_HEADER = (
    "server              conns join 1st half s 2nd half s RSS/conn KB  RSS MB peak MB"
)


def message(sender: int, seq: int, sent_ns: int) -> bytes:
    return b'{"type":"chat","user":"c%d","text":"bench#%d#%d#%d#"}\n' % (
        sender, sender, seq, sent_ns
    )


# ---------------------------------------------------------------- the loader


def test_receiver_counts_messages_cut_across_reads() -> None:
    client = loader.Client(7, frame=False, probe=False, sender=False, w=loader.Window())
    data = b"".join(message(1, n, 123) for n in range(10)) + b'{"type":"system"}\n'
    for cut in range(0, len(data), 13):  # every chunk boundary position, roughly
        client.feed(data[cut : cut + 13])
    assert client.count == 10


def test_probe_records_latency_only_inside_the_window() -> None:
    w = loader.Window()
    client = loader.Client(3, frame=True, probe=True, sender=False, w=w)
    now = time.monotonic_ns()
    data = message(1, 1, now - 2_000_000) + message(2, 1, now - 1_000_000)
    client.feed(data[:50])  # the first message is cut: nothing counted yet
    assert client.count == 0
    w.lat_from, w.lat_to = now - 10**9, now + 10**9
    client.feed(data[50:])
    assert client.count == 2
    assert len(w.latencies) == 2 and all(1_000_000 <= x < 10**9 for x in w.latencies)


def test_sender_tops_up_its_window_from_its_own_echoes() -> None:
    w = loader.Window()
    w.sending, w.window = True, 4
    client = loader.Client(5, frame=False, probe=False, sender=True, w=w)
    client.seq = 4  # four in flight
    more = client.feed(message(5, 1, 1) + message(15, 1, 1) + message(5, 2, 1))
    assert (client.acked, client.count, more) == (2, 3, 2)  # "bench#15#" is not ours


def test_ws_client_frames_are_masked_with_a_zero_key() -> None:
    assert loader.ws_client_frame(b"hi") == b"\x81\x82\x00\x00\x00\x00hi"
    assert loader.ws_client_frame(b"x" * 200)[:4] == b"\x81\xfe\x00\xc8"


def test_cluster_clients_and_senders_spread_over_every_process() -> None:
    senders = sorted(runner.pick_senders(100, 10))  # every 10th client: all even
    for processes in (2, 3):
        place = [loader.node_of(cid, senders, processes) for cid in range(100)]
        on = [[cid for cid in range(100) if place[cid] == p] for p in range(processes)]
        assert max(map(len, on)) - min(map(len, on)) <= 1
        senders_on = [sum(cid in senders for cid in part) for part in on]
        assert max(senders_on) - min(senders_on) <= 1, senders_on


def test_cluster_targets_share_one_redis_and_differ_only_in_processes() -> None:
    built = targets.cluster_targets(3)
    assert [t.name for t in built] == [
        "trio-chat tcp x1 no redis", "trio-chat tcp x1 redis", "trio-chat tcp x2 redis",
        "trio-chat tcp x3 redis",
    ]  # fmt: skip
    alone, *clustered = built
    assert alone.redis_port is None and alone.command and "--redis" not in alone.command
    url = f"redis://127.0.0.1:{clustered[0].redis_port}/0"
    for n, target in enumerate(clustered, 1):
        assert target.processes == n and target.redis_port == clustered[0].redis_port
        for one in (target, *target.nodes):
            assert one.command is not None and one.command[-2:] == ("--redis", url)
        assert len({t.url for t in (target, *target.nodes)}) == n


def test_cluster_targets_with_redis_wait_add_replicas_then_the_wait() -> None:
    built = targets.cluster_targets(1, redis_wait=1)
    assert [(t.name, t.redis_replicas) for t in built] == [
        ("trio-chat tcp x1 no redis", 0), ("trio-chat tcp x1 redis", 0),
        ("trio-chat tcp x1 redis, 1 replica", 1), ("trio-chat tcp x1 redis, 1 replica, wait 1", 1),
    ]  # fmt: skip
    commands = [t.command for t in built]
    assert all(c is not None and "--redis-wait" not in c for c in commands[:3])
    assert commands[3] is not None and commands[3][-2:] == ("--redis-wait", "1")


# ---------------------------------------------------------------- the reports


def test_report_prints_ratios_per_run_and_per_cpu_second() -> None:
    results = [
        runner.Result("trio-chat ws", 0, 100, deliveries_per_s=300.0, per_cpu_s=600.0),
        runner.Result("node", 0, 100, deliveries_per_s=100.0, per_cpu_s=100.0),
        runner.Result("trio-chat ws", 1, 100, deliveries_per_s=200.0, per_cpu_s=400.0),
        runner.Result("node", 1, 100, deliveries_per_s=100.0, per_cpu_s=100.0),
    ]
    text = report.report(results)
    assert text.splitlines()[0] == FANOUT_HEADER
    assert "trio-chat ws / node: 2.50x (runs 2.00-3.00); 5.00x per CPU-s" in text


def test_senders_over_rooms_are_one_per_room_in_turn() -> None:
    senders = runner.pick_senders(1000, 100, rooms=100)
    assert {runner.room_of(cid, 100) for cid in senders} == set(range(100))
    assert runner.pick_senders(100, 10) == {i * 10 for i in range(10)}  # one room: as before


def test_cluster_report_compares_each_count_with_one_process_on_redis() -> None:
    def row(name: str, n: int, rate: float, cpu: float, redis: bool = True) -> runner.Result:
        return runner.Result(f"trio-chat tcp {name}", 0, 100, deliveries_per_s=rate,
                             per_cpu_s=cpu, processes=n, redis=redis,
                             redis_cpu=0.2 if redis else None)  # fmt: skip

    text = report.report([
        row("x1 no redis", 1, 400.0, 400.0, redis=False), row("x1 redis", 1, 200.0, 200.0),
        row("x2 redis", 2, 300.0, 150.0),
    ])  # fmt: skip
    assert "x1 redis / trio-chat tcp x1 no redis: 0.50x; 0.50x per CPU-s" in text
    assert "x2 redis / trio-chat tcp x1 redis: 1.50x; 0.75x per CPU-s" in text


def test_cluster_baseline_rows_run_the_other_python_on_a_redis_of_their_own() -> None:
    ours = targets.cluster_targets(1)
    theirs = targets.cluster_targets(1, python="/old/.venv/bin/python", label="baseline")
    assert [t.name for t in theirs] == ["baseline tcp x1 no redis", "baseline tcp x1 redis"]
    for target in theirs:
        assert target.command is not None and target.command[:2] == (
            "/old/.venv/bin/python", "-I")
    assert theirs[1].redis_port != ours[1].redis_port


def test_cluster_report_compares_each_row_with_its_baseline() -> None:
    def row(name: str, rate: float, redis: bool = True) -> runner.Result:
        return runner.Result(name, 0, 100, deliveries_per_s=rate, per_cpu_s=rate,
                             processes=1, redis=redis)  # fmt: skip

    text = report.report([
        row("trio-chat tcp x1 no redis", 400.0, redis=False),
        row("trio-chat tcp x1 redis", 300.0),
        row("baseline tcp x1 no redis", 400.0, redis=False),
        row("baseline tcp x1 redis", 100.0),
    ])  # fmt: skip
    assert "trio-chat tcp x1 redis / trio-chat tcp x1 no redis: 0.75x; 0.75x per CPU-s" in text
    assert "baseline tcp x1 redis / baseline tcp x1 no redis: 0.25x; 0.25x per CPU-s" in text
    assert "trio-chat tcp x1 redis / baseline tcp x1 redis: 3.00x; 3.00x per CPU-s" in text
    assert "trio-chat tcp x1 no redis / baseline tcp x1 no redis: 1.00x" in text


def test_profile_top_ranks_functions_by_self_time(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text("main;run;send_all 6\nmain;run;encode 3\nmain;idle 1\nnot a sample\n")
    assert servers.profile_top(str(raw), limit=2) == [("send_all", 0.6), ("encode", 0.3)]
    assert servers.profile_top(str(tmp_path / "missing.txt")) == []


# ---------------------------------------------------------------- the command's checks


def test_cluster_refuses_peers_and_says_when_redis_server_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runner_ = CliRunner()
    result = runner_.invoke(cli.main, ["bench", "--cluster", "2", "--peer", "n", "ws://h:1/", "x"])
    assert result.exit_code == 2 and "no --peer" in result.output
    result = runner_.invoke(cli.main, ["bench", "--cluster", "2", "--rooms", "2"])
    assert result.exit_code == 2 and "--rooms goes with the fan-out" in result.output
    result = runner_.invoke(cli.main, ["bench", "--scale", "--baseline", "python3"])
    assert result.exit_code == 2 and "--baseline" in result.output
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no redis-server on it
    result = runner_.invoke(cli.main, ["bench", "--cluster", "2"])
    assert result.exit_code == 1 and "Debian package redis-server" in result.output


def test_a_peer_url_that_is_not_tcp_or_ws_is_a_usage_error() -> None:
    result = CliRunner().invoke(
        cli.main, ["bench", "--peer", "node", "http://127.0.0.1:8766/", "node server.mjs"]
    )
    assert result.exit_code == 2
    assert "--peer" in result.output and "expected tcp://HOST:PORT" in result.output


def test_profiles_without_py_spy_stop_before_any_server_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if os.access(Path(sys.executable).with_name("py-spy"), os.X_OK):
        pytest.skip("py-spy is installed beside this Python")
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no py-spy on it
    result = CliRunner().invoke(cli.main, ["bench", "--profile-dir", str(tmp_path / "p")])
    assert result.exit_code == 1 and "--profile-dir needs py-spy" in result.output
    assert not (tmp_path / "p").exists()


def test_without_psutil_the_bench_says_which_extra_to_install(tmp_path: Path) -> None:
    """A Python where ``import psutil`` fails, as without the bench extra."""
    (tmp_path / "psutil").mkdir()
    (tmp_path / "psutil" / "__init__.py").write_text("raise ImportError('no psutil here')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = run([sys.executable, "-m", "trio_chat", "bench", "--mode", "tcp"], env=env)
    assert done.returncode == 1
    assert "trio-chat bench needs psutil: pip install 'trio-chat[bench]'" in done.stderr


@pytest.mark.parametrize(
    "argv",
    [["--messages", "3"], ["--single", "0"], ["--clients", "4", "--server-messages", "3"]],
)
def test_store_benchmark_refuses_sizes_that_give_no_figure(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        store.parse_args(argv)
    assert exc.value.code == 2


def test_round_trip_benchmark_needs_one_round_trip_at_least() -> None:
    with pytest.raises(SystemExit) as exc:
        round_trip.parse_args(["--count", "0"])
    assert exc.value.code == 2


# ---------------------------------------------------------------- every script, tiny


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=100, env=env, stdin=subprocess.DEVNULL
    )


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    done = run([sys.executable, "-m", "trio_chat", "bench", *args])
    assert done.returncode == 0, done.stderr
    return done


def rows(table: str, peers: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """The table's server rows: name ("trio-chat MODE", or a peer's) -> the other columns."""
    found = {}
    for line in table.splitlines()[1:]:
        words = line.split()
        if line.startswith("trio-chat "):
            found[" ".join(words[:2])] = words[2:]
        elif words and words[0] in peers:
            found[words[0]] = words[1:]
    return found


def figure(text: str) -> float:
    return float(text.replace(",", "").rstrip("%"))


@pytest.mark.slow
def test_fanout_benchmark_measures_a_peer_in_the_same_run_and_loses_nothing() -> None:
    """Closed loop, trio-chat over WebSocket and a peer on TCP (the cluster run below
    covers trio-chat on TCP at a fixed rate): the table and the ratio a user reads."""
    peer = f"tcp://127.0.0.1:{free_port()}"
    command = f"{sys.executable} -c '{RELAY}' {peer.rsplit(':', 1)[1]}"
    done = bench("--mode", "ws-batch", "--peer", "relay", peer, command, "--clients", "6",
                 "--senders", "2", "--window", "2", "--duration", "1", "--warmup", "0.5",
                 "--probe-every", "2")  # a loaded machine once left 0.5 s without a delivery
    assert done.stdout.splitlines()[0] == FANOUT_HEADER
    table = rows(done.stdout, peers=("relay",))
    assert list(table) == ["trio-chat ws-batch", "relay"]
    assert re.search(r"^  trio-chat ws-batch / relay: [\d.]+x; [\d.]+x per CPU-s$",
                     done.stdout, re.MULTILINE), done.stdout
    for name, columns in table.items():
        # deliveries/s, per CPU-s, p50, p99, max, lost, srv CPU, peak MB, loader, and a
        # flag when the loader was the bottleneck (likely against a relay this simple)
        assert len(columns) == 9 or columns[9:] == ["SATURATED"], (name, columns)
        rate, _, p50, p99, worst, lost, _, peak, _ = columns[:9]
        assert figure(rate) > 0 and figure(peak) > 0
        assert 0 <= figure(p50) <= figure(p99) <= figure(worst)
        assert lost == "0", done.stdout
        assert f"run 1: {name}: " in done.stderr
    assert "ERROR" not in done.stdout


@pytest.mark.slow
def test_rooms_and_baseline_rows_are_measured_in_the_same_runs() -> None:
    """``--rooms N`` adds a row with the clients spread over N rooms (each message to
    its room only: nothing lost, counted per room), ``--baseline PYTHON`` a row of the
    same mode run by that Python, each compared with its own one-room row."""
    done = bench("--mode", "tcp", "--rooms", "3", "--baseline", sys.executable,
                 "--clients", "6", "--senders", "3", "--window", "2", "--duration", "0.5",
                 "--warmup", "0.2", "--probe-every", "2")
    names = ["trio-chat tcp", "baseline tcp", "trio-chat tcp x3 rooms"]
    lines = done.stdout.splitlines()
    for name, line in zip(names, lines[1:4], strict=True):
        assert line.startswith(name + " "), done.stdout
        columns = line[len(name):].split()
        assert figure(columns[0]) > 0 and columns[5] == "0", (name, columns)  # none lost
    assert "ERROR" not in done.stdout
    assert re.search(r"^  trio-chat tcp / baseline tcp: [\d.]+x", done.stdout, re.MULTILINE)
    assert re.search(r"^  trio-chat tcp x3 rooms / trio-chat tcp: [\d.]+x", done.stdout,
                     re.MULTILINE)
    assert "trio-chat tcp x3 rooms / baseline tcp" not in done.stdout


@pytest.mark.slow
def test_fanout_benchmark_reports_grpc_beside_tcp() -> None:
    """gRPC Session streams, one event per message and batched, measured in the same
    run as TCP: every message reaches every client."""
    done = bench("--mode", "tcp", "--mode", "grpc", "--mode", "grpc-batch", "--clients", "6",
                 "--senders", "2", "--window", "2", "--duration", "0.5", "--warmup", "0.2",
                 "--probe-every", "2")
    table = rows(done.stdout)
    assert list(table) == ["trio-chat tcp", "trio-chat grpc", "trio-chat grpc-batch"]
    for name, columns in table.items():
        rate, _, p50, p99, worst, lost = columns[:6]
        assert figure(rate) > 0 and 0 <= figure(p50) <= figure(p99) <= figure(worst)
        assert lost == "0", (name, done.stdout)
    assert "ERROR" not in done.stdout


@pytest.mark.slow
def test_scale_benchmark_holds_every_connection() -> None:
    done = bench("--scale", "--clients", "4")
    assert done.stdout.splitlines()[0] == SCALE_HEADER
    (columns,) = rows(done.stdout).values()
    connections, first, second, per_connection, idle, peak = columns
    assert connections == "4" and figure(idle) > 0 and figure(peak) > 0
    assert min(figure(first), figure(second)) >= 0
    figure(per_connection)  # a number (it may be below zero: RSS can shrink)
    # It says what it is doing before each measurement, then what it measured.
    progress = done.stderr.splitlines()
    assert progress.index("  run 1: trio-chat tcp+ws: starting (4 idle connections)...") < (
        progress.index("  run 1: trio-chat tcp+ws: 4 connected"))


@pytest.mark.slow
def test_cluster_benchmark_reaches_clients_on_every_process() -> None:
    """Two processes on one Redis at a fixed rate, senders on both, as JSON: lost == 0
    means every client got every message, those sent on the other process included."""
    redis_server_or_skip()  # skips (fails under CI) without redis-server
    done = bench("--cluster", "2", "--rate", "1200", "--clients", "6", "--senders", "2",
                 "--duration", "0.5", "--warmup", "0", "--json")
    results: list[dict[str, Any]] = json.loads(done.stdout)["results"]
    assert [r["target"] for r in results] == [
        "trio-chat tcp x1 no redis", "trio-chat tcp x1 redis", "trio-chat tcp x2 redis"
    ]
    for result in results:
        assert result["error"] is None, result
        assert result["connected"] == 6 and result["lost"] == 0 and result["disconnected"] == 0
        assert result["messages_sent"] > 0 and result["deliveries_per_s"] > 0
        assert result["p50_ms"] is not None
    alone, one, two = results
    assert alone["redis_cpu"] is None and one["redis_cpu"] is not None
    assert two["processes"] == 2 and len(two["server_cpu_each"]) == 2


@pytest.mark.slow
def test_store_benchmark_reports_both_rates_and_their_peers() -> None:
    done = run([sys.executable, "-m", "trio_chat.bench.store", "--messages", "400",
                "--single", "20", "--clients", "2", "--server-messages", "100"])
    assert done.returncode == 0, done.stderr
    rates = re.findall(r"^(store|server) .*?([\d,]+) messages/s", done.stdout, re.MULTILINE)
    assert [kind for kind, _ in rates] == ["store", "store", "server", "server"], done.stdout
    assert all(figure(rate) > 0 for _, rate in rates)


@pytest.mark.slow
def test_redis_round_trip_benchmark_reports_each_command() -> None:
    redis_server_or_skip()
    done = run([sys.executable, "-m", "trio_chat.bench.redis_round_trip", "--count", "20"])
    assert done.returncode == 0, done.stderr
    costs = re.findall(r"^(.+?)\s+([\d.]+) us CPU per round trip", done.stdout, re.MULTILINE)
    assert [name for name, _ in costs] == [
        "coredis PING", "coredis EVALSHA", "coredis XREAD (1 entry)", "lean EVALSHA",
        "lean XREAD (1 entry)", "raw RESP PING (floor)",
    ]
    assert all(float(us) > 0 for _, us in costs)


@pytest.mark.slow
def test_paste_benchmark_times_a_paste_and_a_key_after_it() -> None:
    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but tmux is missing")
        pytest.skip("tmux is not installed")
    done = run([sys.executable, "-m", "trio_chat.bench.paste", "100", "300"])
    assert done.returncode == 0, done.stderr
    shown = re.findall(r"^\s*(\d+) chars: shown after\s+([\d.]+) s; one more key after\s+\d+ ms",
                       done.stdout, re.MULTILINE)
    assert [size for size, _ in shown] == ["100", "300"], done.stdout


@pytest.mark.slow
def test_flood_benchmark_reports_the_round_trips_with_and_without_flooders() -> None:
    done = run([sys.executable, "-m", "trio_chat.bench.flood", "--flooders", "2",
                "--seconds", "1", "--quiet-seconds", "0.5"])
    assert done.returncode == 0, done.stderr
    pings = re.findall(r"^(no flooders|2 newline flooders).*?(\d+) pings, p50", done.stdout,
                       re.MULTILINE)
    assert [kind for kind, _ in pings] == ["no flooders", "2 newline flooders"], done.stdout
    assert all(int(count) > 0 for _, count in pings)
    assert "flooders told rate_limited and closed:" in done.stdout


def test_encode_benchmark_reports_each_text_against_its_peer() -> None:
    done = run([sys.executable, "-m", "trio_chat.bench.encode", "--repeats", "1",
                "--scale", "0.001"])
    assert done.returncode == 0, done.stderr
    rows = re.findall(r"^(.+?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", done.stdout, re.MULTILINE)
    assert len(rows) == 9, done.stdout
    assert all(float(ratio) > 0 for *_, ratio in rows)


@pytest.mark.slow
def test_heap_benchmark_reports_each_kind_by_library() -> None:
    done = run([sys.executable, "-m", "trio_chat.bench.heap", "--kind", "tcp", "--kind", "ws",
                "--clients", "20", "--top", "3"])
    assert done.returncode == 0, done.stderr
    kinds = re.findall(r"^(tcp|ws): ([\d.]+) KB of Python heap per idle joined connection",
                       done.stdout, re.MULTILINE)
    assert [kind for kind, _ in kinds] == ["tcp", "ws"], done.stdout
    assert all(float(kb) > 0 for _, kb in kinds), done.stdout
    assert "trio-chat" in done.stdout and "trio_websocket" in done.stdout, done.stdout
