"""The benchmark's own parts: the loader's cheap accounting, the report, one real run."""

from __future__ import annotations

import time

import pytest

from trio_chat import bench


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
