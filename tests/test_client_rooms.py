"""The client's rooms over memory streams: entering the ``--room`` rooms, rejoining
every room after a lost connection with each room's own ``since``, and what a hostile
server's room messages cannot do (unknown rooms, bad names, too many rooms).

A scripted server plays the other side (tests/test_client_session.py's), so each
exchange is exactly the wire shape of docs/protocol.md (*Rooms*, *Direct messages*).
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from tests.test_client_session import Peer, Recorder, ScriptedServer, session_for
from trio_chat.client import ClientConfig
from trio_chat.client.display import format_line
from trio_chat.client.incoming import MAX_LIST, Incoming
from trio_chat.client.rooms import MAX_CONVERSATIONS, MAX_ROOMS
from trio_chat.client.tui import ChatApp

CONFIG = ClientConfig(name="Bob", rooms=("#dev", "#lobby", "#ops"), backoff_initial=1.0)


def welcome(room: str, **extra: Any) -> dict[str, Any]:
    return {"type": "welcome", "room": room, "user": "Bob", "users": ["Bob"],
            "topic": "", "clients_count": 1, **extra}


async def enter(peer: Peer, room: str, last_id: int) -> None:
    await peer.send(welcome(room), {"type": "history_end", "room": room, "last_id": last_id})


async def test_enters_every_room_and_rejoins_each_after_its_own_last_id(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = ScriptedServer()
    session, seen = session_for(server, CONFIG)
    nursery.start_soon(session.run)

    peer = await server.accept()
    # The first room comes with the name; the others after its welcome.
    assert await peer.recv() == {"type": "join", "user": "Bob", "room": "#dev", "batch": True}
    await enter(peer, "#dev", 10)
    assert await peer.recv() == {"type": "join", "room": "#lobby"}
    assert await peer.recv() == {"type": "join", "room": "#ops"}
    await enter(peer, "#lobby", 4)
    await enter(peer, "#ops", 0)
    await peer.send(
        {"type": "chat", "room": "#lobby", "id": 12, "user": "Ann", "text": "lobby"},
        {"type": "chat", "room": "#dev", "id": 13, "user": "Ann", "text": "dev"},
        # Our own part: #ops is no longer ours (and not rejoined).
        {"type": "system", "room": "#ops", "event": "leave", "name": "bob",
         "text": "Bob left #ops"},
    )
    await peer.send(welcome("#lobby", resume="TOKEN-1"))  # the last welcome's token counts
    await session.send({"type": "ping"})
    assert await peer.recv() == {"type": "ping"}
    assert session.rooms == ["#dev", "#lobby"]
    await peer.close()

    peer = await server.accept()
    assert await peer.recv() == {"type": "join", "user": "Bob", "room": "#dev", "batch": True,
                                 "resume": "TOKEN-1", "since": 13}
    await peer.send(welcome("#dev"),
                    {"type": "chat", "room": "#dev", "id": 13, "user": "Ann", "text": "dev",
                     "history": True},
                    {"type": "history_end", "room": "#dev", "last_id": 13})
    # #lobby asks for what came after its own newest (12), not after #dev's.
    assert await peer.recv() == {"type": "join", "room": "#lobby", "since": 12}
    await peer.send(welcome("#lobby"),
                    {"type": "chat", "room": "#lobby", "id": 12, "user": "Ann", "text": "lobby",
                     "history": True},
                    {"type": "chat", "room": "#lobby", "id": 14, "user": "Ann", "text": "missed",
                     "history": True},
                    {"type": "history_end", "room": "#lobby", "last_id": 14})
    await session.send({"type": "ping"})
    assert await peer.recv() == {"type": "ping"}
    texts = [(m["room"], m["text"]) for m in seen.messages if m["type"] == "chat"]
    assert texts == [("#lobby", "lobby"), ("#dev", "dev"), ("#lobby", "missed")]
    assert session.rooms == ["#dev", "#lobby"]


async def test_a_hostile_server_s_rooms_are_bounded_and_never_shown_wrong(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = ScriptedServer()
    session, seen = session_for(server, ClientConfig(name="Bob"))
    nursery.start_soon(session.run)
    peer = await server.accept()
    assert await peer.recv() == {"type": "join", "user": "Bob", "batch": True}  # v1: #lobby
    await peer.send(welcome("#lobby"))
    await peer.send(
        # Not a room name: dropped whole (it could only be shown in the wrong place).
        {"type": "chat", "room": "#" + "x" * 10_000, "id": 1, "user": "Eve", "text": "long"},
        {"type": "chat", "room": ["#lobby"], "id": 2, "user": "Eve", "text": "list"},
        {"type": "chat", "room": "#a b", "id": 3, "user": "Eve", "text": "space"},
        # A room we are not in: nowhere to show it.
        {"type": "chat", "room": "#elsewhere", "id": 4, "user": "Eve", "text": "stray"},
        {"type": "system", "room": "#elsewhere", "event": "join", "text": "Eve joined"},
        # More welcomes than any server gives one connection: the rest are ignored.
        *(welcome(f"#r{n}") for n in range(MAX_ROOMS + 20)),
        {"type": "chat", "room": "#lobby", "id": 5, "user": "Ann", "text": "fine"},
    )
    await session.send({"type": "ping"})
    assert await peer.recv() == {"type": "ping"}
    assert [m["text"] for m in seen.messages if m["type"] == "chat"] == ["fine"]
    assert len(session.rooms) == MAX_ROOMS and session.rooms[0] == "#lobby"
    assert not any(m.get("room") == "#elsewhere" for m in seen.messages)


def test_room_lists_and_direct_messages_are_checked_and_cut() -> None:
    incoming = Incoming()
    huge = {"type": "rooms", "total": 5,
            "rooms": [{"room": "#a", "users": 2, "topic": "t" * 5000}, {"room": 3}, "x",
                      *({"room": f"#r{n}", "users": -1} for n in range(MAX_LIST + 10))]}
    checked = incoming.check(huge)
    assert checked is not None and len(checked["rooms"]) == MAX_LIST - 2
    first = checked["rooms"][0]
    assert first["room"] == "#a" and len(first["topic"]) < 1100 and first["users"] == 2
    assert "users" not in checked["rooms"][1]  # -1 is not a count
    users = incoming.check({"type": "users", "room": "#a", "users": ["x"] * (MAX_LIST + 5)})
    assert users is not None and len(users["users"]) == MAX_LIST
    assert incoming.check({"type": "msg", "from": "Ann", "to": 5, "text": "x"}) is None
    assert incoming.check({"type": "msg", "from": "Ann", "to": "Bob"}) is None
    dm = incoming.check({"type": "msg", "id": 9, "from": "Ann", "to": "Bob", "text": "psst",
                         "timestamp": "2026-12-01T10:00:00Z"})
    assert dm is not None
    line = format_line(dm)
    assert line is not None and line.endswith("] (direct) Ann -> Bob: psst")
    chat = {"type": "chat", "room": "#dev", "user": "Ann", "text": "hi",
            "timestamp": "2026-12-01T10:00:00Z"}
    line = format_line(chat)
    assert line is not None and line.endswith("] #dev Ann: hi")


async def test_a_first_room_that_cannot_be_entered_falls_back_to_the_lobby(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = ScriptedServer()
    frontend = Recorder()
    session, seen = session_for(server, ClientConfig(name="Bob", rooms=("#new",)), frontend)
    nursery.start_soon(session.run)
    peer = await server.accept()
    assert (await peer.recv())["room"] == "#new"
    await peer.send({"type": "error", "code": "too_many_rooms",
                     "text": "the server holds 10000 rooms"})
    assert await peer.recv() == {"type": "join", "user": "Bob", "batch": True}
    await peer.send(welcome("#lobby"))
    await session.send({"type": "ping"})
    assert await peer.recv() == {"type": "ping"}
    assert session.rooms == ["#lobby"]
    assert any(m.get("code") == "too_many_rooms" for m in seen.messages)  # shown, not hidden


# ---------------------------------------------------------------- the full-screen client


def shown(app: ChatApp) -> str:
    """The current conversation's entries as text."""
    return "\n".join(
        row.decode().rstrip() for entry in app.walker for row in entry.render((100,)).text
    )


def listed(app: ChatApp) -> list[str]:
    """The room list as it reads (``>`` marks the current one)."""
    return [str(item.text) for item in app.room_list]


def test_tui_keeps_a_conversation_per_room_and_person_with_unread_counts() -> None:
    app = ChatApp(ClientConfig(name="Bob", rooms=("#dev", "#lobby")))
    server = app.session.receive  # as if from the connection
    server(welcome("#dev", topic="release on Friday"))
    server(welcome("#lobby"))
    server({"type": "chat", "room": "#lobby", "id": 3, "user": "Ann", "text": "lunch?"})
    server({"type": "msg", "id": 4, "from": "Ann", "to": "Bob", "text": "psst"})
    assert listed(app) == [">#dev", " #lobby (1)", " @Ann (1)"]
    assert "lunch?" not in shown(app) and "release on Friday" in str(app.title.text)
    app.on_key("meta right")
    assert listed(app) == [" #dev", ">#lobby", " @Ann (1)"] and "Ann: lunch?" in shown(app)
    app.on_key("ctrl n")
    assert "Ann: psst" in shown(app)
    # Typed in a direct conversation: a direct message, pending until its echo.
    assert app.submit("on my way")
    assert app.session.send_nowait({"type": "ping"})  # the outbox took it too
    server({"type": "msg", "id": 5, "from": "Bob", "to": "Ann", "text": "on my way"})
    assert "Bob: on my way" in shown(app) and "pending" not in shown(app)
    # "/msg" with a quoted name opens (and switches to) that conversation.
    app.submit('/msg "Ann Lee" hello there')
    assert listed(app)[-1] == ">@Ann Lee" and "pending  > Bob: hello there" in shown(app)


def test_tui_bounds_its_conversations_against_a_flood_of_direct_messages() -> None:
    app = ChatApp(ClientConfig(name="Bob"))
    app.session.receive(welcome("#lobby"))
    for n in range(MAX_CONVERSATIONS + 50):
        app.session.receive({"type": "msg", "id": n + 1, "from": f"u{n}", "to": "Bob",
                             "text": "hi"})
    assert len(app.conversations) == MAX_CONVERSATIONS
    assert listed(app)[0] == ">#lobby"  # the room we are in, and the one shown, stay
    assert listed(app)[-1] == f" @u{MAX_CONVERSATIONS + 49} (1)"  # the newest stay
