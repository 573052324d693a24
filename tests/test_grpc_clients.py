"""The clients of the gRPC port: ``trio-chat join --grpc`` (line mode, plain and TLS)
and examples/grpc_client.py, real processes against a real server."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
import trio

from tests.support.clients import enter
from tests.support.config import TEST_CONFIG
from tests.support.grpcclient import grpc_client
from tests.support.processes import JoinProcess, client_env, join_command, server_process
from tests.support.tcp import TcpClient
from tests.support.tls import TlsFiles
from tests.support.tmux import Tmux, needs_tmux
from tests.support.waits import WAIT
from trio_chat import Bound, Config, serve

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "grpc_client.py"


@pytest.fixture
def config() -> Config:
    return replace(TEST_CONFIG, grpc_port=0)


def target(server: Bound) -> str:
    assert server.grpc_target is not None
    return server.grpc_target


async def test_join_over_grpc_chats_with_a_tcp_user(server: Bound, nursery: trio.Nursery) -> None:
    async with await TcpClient.connect(server.tcp_port) as bob:
        await bob.join("Bob")
        await bob.send({"type": "chat", "text": "before you came"})
        ann = await JoinProcess.start(nursery, "--name", "Ann", "--grpc", target(server))
        await ann.wait_for("before you came")  # the replay, then who you are
        await ann.wait_for("you are Ann")
        await bob.recv_until(type="system", event="join", name="Ann")
        await ann.send_line("hi bob, over gRPC")
        message = await bob.recv_until(type="chat", user="Ann")
        assert message["text"] == "hi bob, over gRPC"
        await bob.send({"type": "chat", "text": "hi ann"})
        assert (await ann.wait_for("hi ann")).endswith("Bob: hi ann")
        await ann.close_stdin()
        assert await ann.exit_code() == 0
        assert (await bob.recv_until(type="system", event="leave"))["name"] == "Ann"


async def test_join_over_grpc_enters_rooms_and_sends_direct_messages(
    server: Bound, nursery: trio.Nursery
) -> None:
    """``--room`` over ``--grpc``: the proto's rooms (JoinRequest.room, ChatRequest.room,
    DirectMessage) carry line mode's rooms and direct messages both ways."""
    async with await TcpClient.connect(server.tcp_port) as bob:
        await bob.join("Bob")
        await enter(bob, "#dev")
        ann = await JoinProcess.start(
            nursery, "--name", "Ann", "--grpc", target(server), "--room", "dev", "--room", "#lobby"
        )
        await ann.wait_for("#lobby * you are Ann")
        await bob.recv_until(type="system", event="join", name="Ann", room="#dev")
        await ann.send_line("over gRPC, in #dev")  # stdin goes to the first --room
        said = await bob.recv_until(type="chat", user="Ann")
        assert said["room"] == "#dev" and said["text"] == "over gRPC, in #dev"
        await bob.send({"type": "chat", "room": "#dev", "text": "seen in dev"})
        await bob.send({"type": "chat", "text": "seen in lobby"})
        await bob.send({"type": "msg", "to": "ann", "text": "psst"})
        assert (await ann.wait_for("seen in dev")).endswith("] #dev Bob: seen in dev")
        assert (await ann.wait_for("seen in lobby")).endswith("] #lobby Bob: seen in lobby")
        assert (await ann.wait_for("psst")).endswith("] (direct) Bob -> Ann: psst")
        await ann.close_stdin()
        assert await ann.exit_code() == 0


async def test_join_over_grpc_with_tls(nursery: trio.Nursery, tls: TlsFiles) -> None:
    server: Bound = await nursery.start(serve, tls.server_config(replace(TEST_CONFIG, grpc_port=0)))
    ann = await JoinProcess.start(
        nursery, "--name", "Ann", "--grpc", target(server), "--tls", "--ca", tls.ca_pem
    )
    await ann.wait_for("you are Ann")
    await ann.send_line("secret")
    assert (await ann.wait_for("secret")).endswith("Ann: secret")
    await ann.close_stdin()
    assert await ann.exit_code() == 0


async def test_join_over_grpc_to_nothing_says_so(nursery: trio.Nursery) -> None:
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ann = await JoinProcess.start(
        nursery, "--name", "Ann", "--grpc", f"127.0.0.1:{port}", "--no-reconnect"
    )
    assert await ann.exit_code() == 1
    assert "cannot connect to grpc://127.0.0.1" in await ann.stderr()


async def test_the_grpcio_example(server: Bound) -> None:
    async with await TcpClient.connect(server.tcp_port) as bob:
        await bob.join("Bob")
        result = await trio.run_process(
            [sys.executable, str(EXAMPLE), target(server), "Example", "one", "two"],
            capture_stdout=True, capture_stderr=True, env=client_env(), check=False,
        )
        assert result.returncode == 0, result.stderr.decode()
        out = result.stdout.decode().splitlines()
        assert out[0] == "online (1): Bob"
        assert out[1].startswith("posted as Example: ids [")
        assert "Example: one" in out[2] and "Example: two" in out[3]
        assert "* you are Example" in out
        assert "Example: hello from grpcio" in out
        for text in ("one", "two", "hello from grpcio"):
            message = await bob.recv_until(type="chat", text=text)
            assert message["user"] == "Example"


def test_the_example_says_how_to_run_it() -> None:
    result = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                            env=client_env(), check=False, timeout=60)
    assert result.returncode == 1 and "HOST:PORT NAME" in result.stderr


async def test_serve_grpc_port_from_the_command_line() -> None:
    """``trio-chat serve --grpc-port 0`` says where it listens; SIGTERM stops it
    cleanly, the call told ``shutdown`` then UNAVAILABLE."""
    async with server_process("--grpc-port", "0") as server:
        line = await server.wait_log("grpc port: ")
        grpc_target = line.rsplit("grpc port: ", 1)[1].split()[0]
        async with grpc_client(grpc_target) as client:
            ann = await client.session()
            await ann.join("Ann")
            server.signal()
            await ann.receive_until("system", event="shutdown")
            await ann.drain()
            code, _ = await ann.status()
            assert code == grpc.StatusCode.UNAVAILABLE
        with trio.fail_after(WAIT):
            assert await server.process.wait() == 0


@needs_tmux
async def test_the_full_screen_client_over_grpc(server: Bound, tmp_path: Path) -> None:
    terminal = Tmux(tmp_path)
    try:
        await terminal.start(join_command("--name", "Bob", "--grpc", target(server)))
        screen = await terminal.wait_for("connected as Bob")
        assert f"grpc://{target(server)}" in screen[-2]
        async with await TcpClient.connect(server.tcp_port) as ann:
            await ann.join("Ann")
            await ann.send({"type": "chat", "text": "hello from nc"})
            await terminal.wait_for("Ann: hello from nc")
            await terminal.keys("hello over gRPC", literal=True)
            await terminal.keys("Enter")
            message = await ann.recv_until(type="chat", user="Bob")
            assert message["text"] == "hello over gRPC"
            await terminal.wait_for("> Bob: hello over gRPC")
    finally:
        await terminal.kill()
