"""The Python code generated from ``proto/trio_chat/v1/chat.proto`` (package
``trio_chat.v1``) by ``make proto``: do not edit ``chat_pb2*``; change the proto and
regenerate (``tests/test_grpc_proto.py`` fails when they differ)."""
