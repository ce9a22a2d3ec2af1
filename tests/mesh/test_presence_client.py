"""An app's presence client against a monitor that says things it cannot read: a real websocket server on
127.0.0.1 playing a broken monitor. Whatever it sends, the client logs it, keeps (or reconnects) its session,
and goes on taking the notices it can read: its task never dies."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from meshkit.mesh._presence import Member, PresenceClient

ORIGIN = "20261203" + "a" * 32


async def test_garbage_from_a_monitor_never_stops_the_presence_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "meshkit")
    sessions = 0
    ready = {"type": "ready", "topic": "multiplex.0001-000", "monitor": "m1", "members": []}

    async def monitor(ws: ServerConnection) -> None:
        nonlocal sessions
        sessions += 1
        await ws.recv()  # the hello
        if sessions == 1:
            await ws.send("not json {")  # its answer to the hello: garbage
            return
        if sessions == 2:
            await ws.send(json.dumps([1, 2]))  # JSON, not an object
            return
        await ws.send(json.dumps(ready))
        await ws.send("\xff garbage")
        await ws.send(json.dumps([]))
        await ws.send(json.dumps({"type": "member", "origin": "bad"}))  # one the app's handler fails on
        await ws.send(json.dumps({"type": "member", "origin": "good"}))
        await ws.wait_closed()

    notices: list[dict[str, Any]] = []

    def on_notice(notice: dict[str, Any]) -> None:
        if notice.get("origin") == "bad":
            raise ValueError("a notice this app cannot take")
        notices.append(notice)

    async def on_ready(topic: str, monitor_id: str, members: Any, cards: Any) -> None:
        pass

    async with serve(monitor, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        member = Member(ORIGIN, "app", "1.0", "APP", 1, "key")
        client = PresenceClient(
            member, on_ready, on_notice, urls=[f"ws://127.0.0.1:{port}/ws/presence"], keepalive=5
        )
        assert await client.start(10.0)  # after the two broken answers, the third session is admitted
        for _ in range(200):
            if notices:
                break
            await asyncio.sleep(0.02)
        assert [n["origin"] for n in notices] == ["good"]
        assert client._task is not None and not client._task.done()
        assert sessions == 3
        text = caplog.text
        assert "its answer to the hello is not JSON" in text
        assert "not a JSON object: [1, 2]" in text
        assert "Ignored a message from the presence monitor that is not JSON" in text
        assert "Ignored a message from the presence monitor that is not a JSON object" in text
        assert "Ignored a member notice from the presence monitor that failed" in text
        await client.close()
