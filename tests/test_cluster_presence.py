"""The other servers' members by room, as the events stream and refreshes change them:
``names(room)`` and ``count(room)`` always agree with a plain model of who is where,
whatever the order of joins, room entries, parts, renames, leaves and servers gone."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from trio_chat.cluster.presence import ClusterPresence
from trio_chat.protocol import skeleton

NODES = ("a", "b")
NAMES = ("Ann", "Bob", "Cy")
ROOMS = ("#lobby", "#dev", "#ops")

Op = tuple[str, str, str, str]
ops = st.lists(st.tuples(
    st.sampled_from(["add", "enter", "part", "remove", "rename", "forget", "refresh"]),
    st.sampled_from(NODES), st.sampled_from(NAMES), st.sampled_from(ROOMS),
), max_size=60)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_the_index_by_room_follows_every_change(changes: list[Op]) -> None:
    presence = ClusterPresence()
    model: dict[str, dict[str, set[str]]] = {node: {} for node in NODES}
    for op, node, name, room in changes:
        users = model[node]
        if op == "add":
            presence.add(node, name)
            users.setdefault(name, set())
        elif op == "enter":
            presence.enter(node, name, room)
            users.setdefault(name, set()).add(room)
        elif op == "part":
            presence.part(node, name, room)
            users.get(name, set()).discard(room)
        elif op == "remove":
            assert presence.remove(node, name) == users.pop(name, set())
        elif op == "rename":
            new = name + "2"
            if new in users or name not in users:
                continue
            assert presence.rename(node, name, new) == users[name]
            users[new] = users.pop(name)
        elif op == "forget":
            gone = presence.forget(node)
            assert gone == {n: rooms for n, rooms in users.items()}
            users.clear()
        else:  # a full refresh with what the model says
            view = {n: {skeleton(k): k for k in u} for n, u in model.items() if u}
            where = {n: {skeleton(k): set(r) for k, r in u.items()} for n, u in model.items() if u}
            presence.replace(view, where)
        for shown in ROOMS:
            expected = sorted(n for u in model.values() for n, r in u.items() if shown in r)
            assert sorted(presence.names(shown)) == expected
            assert presence.count(shown) == len(expected)
        assert presence.count() == sum(len(u) for u in model.values())
