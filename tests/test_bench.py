"""The benchmark's own parts: the loader's cheap accounting, the report, one real run."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from tests.support.redis import redis_server_or_skip
from trio_chat import cli
from trio_chat.bench import runner as bench


def message(sender: int, seq: int, sent_ns: int) -> bytes:
    return b'{"type":"chat","user":"c%d","text":"bench#%d#%d#%d#"}\n' % (
        sender, sender, seq, sent_ns
    )


def test_receiver_counts_messages_cut_across_reads():
    client = bench.Client(7, frame=False, probe=False, sender=False, w=bench.Window())
    data = b"".join(message(1, n, 123) for n in range(10)) + b'{"type":"system"}\n'
    for cut in range(0, len(data), 13):  # every chunk boundary position, roughly
        client.feed(data[cut : cut + 13])
    assert client.count == 10


def test_probe_records_latency_only_inside_the_window():
    w = bench.Window()
    client = bench.Client(3, frame=True, probe=True, sender=False, w=w)
    now = time.monotonic_ns()
    data = message(1, 1, now - 2_000_000) + message(2, 1, now - 1_000_000)
    client.feed(data[:50])  # the first message is cut: nothing counted yet
    assert client.count == 0
    w.lat_from, w.lat_to = now - 10**9, now + 10**9
    client.feed(data[50:])
    assert client.count == 2
    assert len(w.latencies) == 2 and all(1_000_000 <= x < 10**9 for x in w.latencies)


def test_sender_tops_up_its_window_from_its_own_echoes():
    w = bench.Window()
    w.sending, w.window = True, 4
    client = bench.Client(5, frame=False, probe=False, sender=True, w=w)
    client.seq = 4  # four in flight
    more = client.feed(message(5, 1, 1) + message(15, 1, 1) + message(5, 2, 1))
    assert (client.acked, client.count, more) == (2, 3, 2)  # "bench#15#" is not ours


def test_ws_client_frames_are_masked_with_a_zero_key():
    assert bench.ws_client_frame(b"hi") == b"\x81\x82\x00\x00\x00\x00hi"
    assert bench.ws_client_frame(b"x" * 200)[:4] == b"\x81\xfe\x00\xc8"


def test_report_prints_ratios_per_run_and_per_cpu_second():
    results = [
        bench.Result("trio-chat ws", 0, 100, deliveries_per_s=300.0, per_cpu_s=600.0),
        bench.Result("node", 0, 100, deliveries_per_s=100.0, per_cpu_s=100.0),
        bench.Result("trio-chat ws", 1, 100, deliveries_per_s=200.0, per_cpu_s=400.0),
        bench.Result("node", 1, 100, deliveries_per_s=100.0, per_cpu_s=100.0),
    ]
    text = bench.report(results)
    assert "trio-chat ws / node: 2.50x (runs 2.00-3.00); 5.00x per CPU-s" in text


@pytest.mark.slow
def test_a_real_run_against_trio_chat_loses_nothing():
    settings = bench.Settings(clients=6, senders=2, window=2, duration=0.6, warmup=0.2, drain=3)
    (result,) = bench.run_bench(bench.our_targets(["ws-batch"]), settings)
    assert result.error is None
    assert result.connected == 6
    assert result.messages_sent > 0 and result.deliveries_per_s > 0
    assert result.lost == 0 and result.disconnected == 0
    assert result.p50_ms is not None and result.server_peak_rss_mb > 0


def test_cluster_clients_and_senders_spread_over_every_process():
    senders = sorted(bench._senders(100, 10))  # every 10th client: all even
    for processes in (2, 3):
        place = [bench.node_of(cid, senders, processes) for cid in range(100)]
        on = [[cid for cid in range(100) if place[cid] == p] for p in range(processes)]
        assert max(map(len, on)) - min(map(len, on)) <= 1
        senders_on = [sum(cid in senders for cid in part) for part in on]
        assert max(senders_on) - min(senders_on) <= 1, senders_on


def test_cluster_targets_share_one_redis_and_differ_only_in_processes():
    targets = bench.cluster_targets(3)
    assert [t.name for t in targets] == [
        "trio-chat tcp x1 no redis", "trio-chat tcp x1 redis", "trio-chat tcp x2 redis",
        "trio-chat tcp x3 redis",
    ]  # fmt: skip
    alone, *clustered = targets
    assert alone.redis_port is None and alone.command and "--redis" not in alone.command
    url = f"redis://127.0.0.1:{clustered[0].redis_port}/0"
    for n, target in enumerate(clustered, 1):
        assert target.processes == n and target.redis_port == clustered[0].redis_port
        for one in (target, *target.nodes):
            assert one.command is not None and one.command[-2:] == ("--redis", url)
        assert len({t.url for t in (target, *target.nodes)}) == n


def test_cluster_report_compares_each_count_with_one_process_on_redis():
    def row(name, n, rate, cpu, redis=True):
        return bench.Result(f"trio-chat tcp {name}", 0, 100, deliveries_per_s=rate,
                            per_cpu_s=cpu, processes=n, redis=redis,
                            redis_cpu=0.2 if redis else None)  # fmt: skip

    text = bench.report([
        row("x1 no redis", 1, 400.0, 400.0, redis=False), row("x1 redis", 1, 200.0, 200.0),
        row("x2 redis", 2, 300.0, 150.0),
    ])  # fmt: skip
    assert "x1 redis / trio-chat tcp x1 no redis: 0.50x; 0.50x per CPU-s" in text
    assert "x2 redis / trio-chat tcp x1 redis: 1.50x; 0.75x per CPU-s" in text


def test_cluster_refuses_peers_and_says_when_redis_server_is_missing(monkeypatch, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli.main, ["bench", "--cluster", "2", "--peer", "n", "ws://h:1/", "x"])
    assert result.exit_code == 2 and "no --peer" in result.output
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no redis-server on it
    result = runner.invoke(cli.main, ["bench", "--cluster", "2"])
    assert result.exit_code == 1 and "Debian package redis-server" in result.output


@pytest.mark.slow
def test_a_real_cluster_run_reaches_clients_on_every_process():
    """Two processes on one Redis, senders on both: lost == 0 means every client got
    every message, those from the other process included."""
    redis_server_or_skip()  # skips (fails under CI) without redis-server
    settings = bench.Settings(clients=6, senders=2, window=2, duration=1.0, warmup=0.3, drain=3)
    target = bench.cluster_targets(2)[-1]
    (result,) = bench.run_bench([target], settings)
    assert result.error is None
    assert result.connected == 6 and result.processes == 2
    assert result.messages_sent > 0 and result.deliveries_per_s > 0
    assert result.lost == 0 and result.disconnected == 0
    assert len(result.server_cpu_each) == 2 and all(c > 0 for c in result.server_cpu_each)
    assert result.redis_cpu is not None and result.redis_cpu > 0
    assert result.p50_ms is not None
