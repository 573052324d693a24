"""A trio-chat client in a few lines of the official grpcio package.

    python examples/grpc_client.py HOST:PORT NAME [MESSAGE...]

Asks who is online (Who), posts MESSAGEs under NAME (Post, one call), prints the last
messages (History), then joins, says hello and reads the room for a moment (Session).
The stubs are the ones ``make proto`` generates from proto/trio_chat/v1/chat.proto
(another language: generate yours from the same file, README.md, "gRPC").
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import grpc

from trio_chat.v1 import chat_pb2, chat_pb2_grpc


def main(target: str, name: str, messages: list[str]) -> None:
    with grpc.insecure_channel(target) as channel:
        chat = chat_pb2_grpc.ChatStub(channel)

        who = chat.Who(chat_pb2.WhoRequest())  # unary
        print(f"online ({who.clients_count}): {', '.join(who.users)}")

        if messages:  # client streaming: one call, many messages
            requests = (chat_pb2.PostRequest(user=name, text=text) for text in messages)
            summary = chat.Post(requests)
            print(f"posted as {name}: ids {list(summary.ids)}")

        for message in chat.History(chat_pb2.HistoryRequest(limit=5)):  # server streaming
            print(f"[{message.id}] {message.user}: {message.text}")

        def events() -> Iterator[chat_pb2.ClientEvent]:  # bidirectional streaming
            yield chat_pb2.ClientEvent(join=chat_pb2.JoinRequest(user=name))
            yield chat_pb2.ClientEvent(chat=chat_pb2.ChatRequest(text="hello from grpcio"))
            yield chat_pb2.ClientEvent(leave=chat_pb2.LeaveRequest())

        for event in chat.Session(events()):
            kind = event.WhichOneof("event")
            if kind == "welcome":
                print(f"* you are {event.welcome.user}")
            elif kind == "chat" and not event.chat.history:  # History showed those
                print(f"{event.chat.user}: {event.chat.text}")
            elif kind == "system":
                print(f"* {event.system.text}")
            elif kind == "error":
                print(f"! {event.error.code}: {event.error.text}")
        # The stream ended: the server flushed what was queued for us after `leave`.


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
