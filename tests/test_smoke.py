from tests.helpers import TcpClient, WsClient, ws_client


async def test_tcp_and_ws_share_a_room(server):
    async with await TcpClient.connect(server.tcp_port) as bob, ws_client(server.ws_port) as conn:
        await bob.join("Bob")
        alice = WsClient(conn)
        welcome = await alice.join("Alice")
        assert welcome["users"] == ["Bob", "Alice"]
        await bob.recv_until(type="system", event="join", name="Alice")
        await bob.send({"type": "chat", "text": "hi alice"})
        msg = await alice.recv_until(type="chat")
        assert msg["user"] == "Bob" and msg["text"] == "hi alice"
        await alice.send({"type": "chat", "text": "hi bob"})
        msg = await bob.recv_until(type="chat", user="Alice")
        assert msg["text"] == "hi bob"
