"""``trio-chat status``: against a real server process, and its arithmetic."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import trio

from tests.support.processes import server_process
from tests.support.tcp import TcpClient, free_port
from tests.support.waits import WAIT
from trio_chat.admin.status import Snapshot, parse, quantile, summarize

STATUS = [sys.executable, "-m", "trio_chat", "status"]


async def status(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process([*STATUS, *args], capture_stdout=True,
                                      capture_stderr=True, check=False)


async def test_status_summarizes_a_running_server() -> None:
    async with server_process("--admin-port", "0", "--rate-limit", "0") as server:
        assert server.admin_port is not None
        url = f"http://127.0.0.1:{server.admin_port}/"
        async with (
            await TcpClient.connect(server.tcp_port) as alice,
            await TcpClient.connect(server.tcp_port) as bob,
        ):
            await alice.join("alice")
            await bob.join("bob")
            for n in range(5):
                await alice.send({"type": "chat", "text": f"m{n}"})
            for _ in range(5):
                await bob.recv_until(type="chat")
            await bob.send_raw(b"{oops\n")
            await bob.recv_until(type="error")
            result = await status("--url", url, "--interval", "0.2")
    out = result.stdout.decode()
    assert result.returncode == 0, (out, result.stderr)
    lines = out.splitlines()
    assert lines[0] == f"trio-chat at {url}: ready"
    assert lines[1].startswith("online    2 members; 2 connections (tcp 2, ws 0), 2 joined")
    assert lines[2] == "rooms     1"
    assert lines[3].startswith("messages  ") and lines[3].endswith(" deliveries")
    assert lines[4].startswith("p99 lag   event loop ")
    assert lines[5] == "redis     not used (one server, SQLite history)"
    assert lines[6].startswith("history   0 pending; commit p99 ")
    assert lines[7] == "errors    bad_json 1"
    assert lines[8] == "dropped   none"
    assert lines[9].startswith("process   ") and "MB RSS" in lines[9]


async def test_status_watch_refreshes_until_stopped() -> None:
    async with server_process("--admin-port", "0") as server:
        url = f"http://127.0.0.1:{server.admin_port}/"
        process = await trio.lowlevel.open_process(
            [*STATUS, "--url", url, "--watch", "--interval", "0.1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        assert process.stdout is not None
        seen = b""
        try:
            with trio.fail_after(WAIT * 3):
                while seen.count(b"Ctrl-C to stop") < 2:
                    seen += await process.stdout.receive_some(65536)
        finally:
            process.kill()
            await process.wait()
            await process.stdout.aclose()
    assert seen.count(f"trio-chat at {url}: ready".encode()) >= 2
    assert b"every 0.1 s" in seen


async def test_status_of_nothing_is_one_line_and_exit_2() -> None:
    result = await status("--url", f"http://127.0.0.1:{free_port()}/")
    assert result.returncode == 2
    err = result.stderr.decode()
    assert err.startswith("cannot reach http://127.0.0.1:") and err.count("\n") == 1
    assert "Traceback" not in err


def test_a_server_not_ready_says_why() -> None:
    text = (
        "# TYPE trio_chat_members gauge\ntrio_chat_members 3\n"
        "# TYPE trio_chat_cluster_members gauge\ntrio_chat_cluster_members 7\n"
        "# TYPE trio_chat_redis_up gauge\ntrio_chat_redis_up 0\n"
        "# TYPE trio_chat_redis_link_state gauge\n"
        'trio_chat_redis_link_state{state="down"} 1\ntrio_chat_redis_link_state{state="up"} 0\n'
        "# TYPE trio_chat_redis_links counter\ntrio_chat_redis_links_total 2\n"
    )
    after = Snapshot(parse(text), ready=False, reasons=["Redis is unreachable"])
    lines = summarize("http://x/", None, after, 0)
    assert lines[0] == "trio-chat at http://x/: NOT READY (Redis is unreachable)"
    assert lines[1].startswith("online    3 members here, 7 on every server")
    assert lines[5] == "redis     down; linked 2 times; re-synced: never"


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [(1.0, 0), (2.0, 10), (math.inf, 10)], 1.5),  # linear inside the bucket
        (0.99, [(0.1, 99), (0.2, 100), (math.inf, 100)], 0.1),
        (0.99, [(0.1, 0), (math.inf, 5)], 0.1),  # past the last bound: that bound
        (0.5, [(0.1, 0), (math.inf, 0)], None),  # nothing observed
    ],
)
def test_quantiles_as_prometheus_estimates_them(
    q: float, buckets: list[tuple[float, float]], expected: float | None
) -> None:
    assert quantile(q, buckets) == expected
