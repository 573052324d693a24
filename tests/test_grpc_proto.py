"""The generated code in trio_chat/v1 is what ``make proto`` makes of the proto now:
regenerated here with the same tools and compared byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = "trio_chat/v1/chat.proto"
GENERATED = ("chat_pb2.py", "chat_pb2.pyi", "chat_pb2_grpc.py", "chat_pb2_grpc.pyi")


def test_the_generated_code_is_up_to_date(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent  # mypy-protobuf's plugins are beside it
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}",
         f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
         f"--mypy_out={tmp_path}", f"--mypy_grpc_out={tmp_path}", str(ROOT / "proto" / PROTO)],
        check=True, env=env, capture_output=True, timeout=60,
    )
    stale = [
        name for name in GENERATED
        if (tmp_path / "trio_chat" / "v1" / name).read_bytes()
        != (ROOT / "trio_chat" / "v1" / name).read_bytes()
    ]
    assert stale == [], f"run `make proto` and commit: {stale} differ from {PROTO}"


def test_the_check_sees_a_change(tmp_path: Path) -> None:
    """The same comparison fails for a proto that differs by one field."""
    proto = tmp_path / "proto" / PROTO
    proto.parent.mkdir(parents=True)
    proto.write_text((ROOT / "proto" / PROTO).read_text().replace(
        "message PingRequest {}", "message PingRequest { string note = 1; }"))
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path / 'proto'}",
         f"--python_out={out}", str(proto)],
        check=True, capture_output=True, timeout=60,
    )
    generated = (out / "trio_chat" / "v1" / "chat_pb2.py").read_bytes()
    assert generated != (ROOT / "trio_chat" / "v1" / "chat_pb2.py").read_bytes()
