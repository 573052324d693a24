"""What each entry point loads, in a fresh interpreter: ``trio-chat join`` and ``serve``
without ``--redis`` never load the cluster's Redis clients (coredis, anyio, hiredis) or the
benchmark (trio_chat.bench, psutil), without ``--grpc``/``--grpc-port`` never gRPC
(grpcio, protobuf), and the sans-IO protocol never loads trio.

Each check runs in a subprocess, since this test process has imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.processes import client_env

#: What only ``--redis`` (coredis, the anyio it runs on, and hiredis) or ``trio-chat
#: bench`` (the package, and psutil) may load.
ONLY_FOR_REDIS_OR_BENCH = ("coredis", "anyio", "hiredis", "psutil", "trio_chat.bench")
#: What only ``serve --grpc-port`` or ``join --grpc`` may load.
ONLY_FOR_GRPC = ("grpc", "google.protobuf", "grpc_health", "grpc_reflection",
                 "trio_chat.transports.grpc", "trio_chat.v1")
#: Printed before the module list, after whatever the code printed itself.
MARK = "--- sys.modules ---"


def modules_after(code: str) -> set[str]:
    """The modules loaded once ``code`` has run in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint({MARK!r})\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=60, env=client_env(), check=False,
    )
    assert result.returncode == 0, result.stderr
    _, _, listing = result.stdout.rpartition(MARK + "\n")
    loaded: list[str] = json.loads(listing)
    return set(loaded)


def offenders(loaded: set[str], only: tuple[str, ...] = ONLY_FOR_REDIS_OR_BENCH) -> list[str]:
    return sorted(
        name for name in loaded
        if any(name == top or name.startswith(top + ".") for top in only)
    )


def cli_run(*args: str) -> str:
    """``python -m trio_chat ARGS`` (runpy, as ``-m`` does), in the same interpreter."""
    return (
        "import runpy, sys\n"
        f"sys.argv = ['trio-chat', *{list(args)!r}]\n"
        "try:\n"
        "    runpy.run_module('trio_chat', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
    )


#: ``serve`` without --redis, for real: listening on loopback, then stopped.
SERVE_AND_STOP = """
import trio
from trio_chat import Config, serve

async def main():
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: serve(
            Config(tcp_port=0, ws_port=0, db=":memory:"), stop=stop, task_status=task_status))
        stop.set()

trio.run(main)
"""


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("import trio_chat.cli", id="import trio_chat.cli"),
        pytest.param(cli_run("join", "--help"), id="trio-chat join --help"),
        pytest.param(cli_run("serve", "--help"), id="trio-chat serve --help"),
        pytest.param("import trio_chat.server.app", id="import trio_chat.server.app"),
        pytest.param(SERVE_AND_STOP, id="serve without --redis"),
    ],
)
def test_join_and_serve_load_neither_redis_nor_the_benchmark_nor_grpc(code: str) -> None:
    loaded = modules_after(code)
    assert "trio_chat" in loaded  # it did run
    assert offenders(loaded) == []
    assert offenders(loaded, ONLY_FOR_GRPC) == []


def test_grpc_is_loaded_with_its_options_only() -> None:
    """``serve --grpc-port`` and ``join --grpc`` do load it (so the check can fail);
    ``join --grpc`` loads the client's half, not the server's."""
    with_grpc = SERVE_AND_STOP.replace('db=":memory:"', 'db=":memory:", grpc_port=0')
    assert with_grpc != SERVE_AND_STOP
    serving = modules_after(with_grpc)
    assert {"grpc", "trio_chat.transports.grpc.server"} <= set(offenders(serving, ONLY_FOR_GRPC))
    joining = modules_after(
        "import trio_chat.client.transport as transport\n"
        "import trio_chat.client.grpcconn\n"
    )
    assert "grpc" in offenders(joining, ONLY_FOR_GRPC)
    assert "trio_chat.transports.grpc.server" not in joining
    assert offenders(joining) == []


def test_the_checks_see_what_redis_and_the_benchmark_load() -> None:
    """The same check on the paths that do load them: it can fail."""
    loaded = offenders(modules_after("import trio_chat.cluster"))
    assert {"coredis", "anyio", "hiredis"} <= set(loaded)
    assert "trio_chat.bench" in offenders(modules_after(cli_run("bench", "--help")))


def test_the_protocol_loads_no_trio() -> None:
    loaded = modules_after("import trio_chat.protocol")
    assert "trio_chat.protocol" in loaded
    assert "trio" not in loaded
    assert modules_after("import trio_chat.protocol, trio") >= {"trio"}  # the check works
