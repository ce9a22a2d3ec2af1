"""Mesh admission: with `mesh.api.key`, only apps holding a key join the mesh or call `/api/event`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from websockets.asyncio.client import connect

from meshkit import AppConfig, AppError, EventEnvelope, PostOffice, decode, encode
from meshkit.security import MeshKeys
from meshkit.testing import running_platform
from tests.support.identities import PUBLIC_KEY
from tests.support.servers import UvicornProcess

KEYS = "new-key-7f3a,old-key-91bc"  # rotation: the first is presented, either is accepted
ORIGIN = "20261125" + "ab" * 16


@pytest.fixture(scope="module")
def guarded_app() -> Iterator[UvicornProcess]:
    properties = {
        "mesh.api.key": KEYS,
        "protect.info.endpoints": "true",
        "show.application.properties": "mesh.api.key",
    }
    with UvicornProcess("tests.apps.http_target:app", properties=properties) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def test_keys_are_compared_without_shortcuts_and_rotate() -> None:
    keys = MeshKeys(AppConfig.load(argv=[], environ={}, overrides={"mesh.api.key": KEYS}))
    assert keys.required and keys.own == "new-key-7f3a"
    assert keys.accepts("new-key-7f3a") and keys.accepts("old-key-91bc")
    assert not keys.accepts("new-key-7f3b") and not keys.accepts("") and not keys.accepts(None)
    open_mesh = MeshKeys(AppConfig.load(argv=[], environ={}))
    assert not open_mesh.required and open_mesh.accepts(None) and open_mesh.headers() == {}


async def test_api_event_needs_a_valid_key(http: aiohttp.ClientSession, guarded_app: UvicornProcess) -> None:
    event = encode(EventEnvelope("test.echo", "hi"))
    for headers in ({}, {"x-mesh-key": "guess"}, {"x-mesh-key": ""}):
        async with http.post(guarded_app.event_url, data=event, headers=headers) as response:
            status, reply = response.status, decode(await response.read())
        assert (status, reply.status) == (401, 401)
        assert "mesh API key" in reply.body
    async with http.post(
        guarded_app.event_url, data=event, headers={"x-mesh-key": "old-key-91bc"}
    ) as response:
        assert response.status == 200 and decode(await response.read()).body == "hi"
    line = guarded_app.wait_for_log("refused with 401")
    assert "127.0.0.1" in line  # the log names the remote address...
    assert "new-key-7f3a" not in guarded_app.log_text() and "old-key-91bc" not in guarded_app.log_text()


async def test_a_post_office_presents_its_own_key() -> None:
    with UvicornProcess("tests.apps.http_target:app", properties={"mesh.api.key": KEYS}) as server:
        for properties, expected in (({"mesh.api.key": "new-key-7f3a"}, 200), ({}, 401)):
            # equipped as in an app: with the Event-over-HTTP client
            async with running_platform([], name="caller", properties=properties) as platform:
                po = PostOffice(platform)
                if expected == 200:
                    assert (await po.request("test.echo", "x", endpoint=server.event_url)).body == "x"
                else:
                    with pytest.raises(AppError) as refused:
                        await po.request("test.echo", "x", endpoint=server.event_url)
                    assert refused.value.status == 401


async def test_protected_info_endpoints_need_a_key_and_never_show_secrets(
    http: aiohttp.ClientSession, guarded_app: UvicornProcess
) -> None:
    for path in ("/env", "/info/lib"):
        async with http.get(guarded_app.url + path) as response:
            assert response.status == 401
            assert "protected" in (await response.json())["detail"]
    async with http.get(guarded_app.url + "/env", headers={"x-mesh-key": "new-key-7f3a"}) as response:
        assert response.status == 200
        shown = await response.json()
    assert shown["properties"]["mesh.api.key"] == "*****"
    async with http.get(guarded_app.url + "/info") as response:  # /info and /health stay open for probes
        assert response.status == 200


async def test_the_presence_monitor_admits_only_apps_with_a_key() -> None:
    properties = {"cloud.connector": "none", "mesh.api.key": KEYS}
    with UvicornProcess("presence_server.main:app", properties=properties) as monitor:
        url = f"ws://127.0.0.1:{monitor.port}/ws/presence/{ORIGIN}"
        hello = {
            "type": "hello",
            "name": "app",
            "version": "1",
            "personality": "APP",
            "group": 1,
            "created": "2026-11-25T00:00:00.000Z",
            "topic": None,
            "key": PUBLIC_KEY,
        }
        async with connect(url, additional_headers={"x-mesh-key": "wrong"}) as ws:
            refusal = json.loads(await ws.recv())
            assert refusal == {
                "type": "error",
                "message": "missing or invalid mesh API key (x-mesh-key header)",
            }
            await ws.wait_closed()
            assert ws.close_code == 4401
        line = monitor.wait_for_log("missing or invalid mesh API key")
        assert "127.0.0.1" in line and "wrong" not in monitor.log_text()
        async with connect(url, additional_headers={"x-mesh-key": "old-key-91bc"}) as ws:
            await ws.send(json.dumps(hello))
            ready = json.loads(await ws.recv())
            assert ready["type"] == "ready" and ready["topic"] == "multiplex.0001-000"


def test_the_monitors_log_is_signed_and_verified_with_any_current_key() -> None:
    sender = MeshKeys(AppConfig.load(argv=[], environ={}, overrides={"mesh.api.key": "old-key-91bc"}))
    receiver = MeshKeys(AppConfig.load(argv=[], environ={}, overrides={"mesh.api.key": KEYS}))
    outsider = MeshKeys(AppConfig.load(argv=[], environ={}, overrides={"mesh.api.key": "stolen-laptop"}))
    leave = {"type": "leave", "origin": ORIGIN}
    assert receiver.verify(sender.sign(leave))
    assert not receiver.verify(leave)  # unsigned
    assert not receiver.verify(outsider.sign(leave))
    assert not receiver.verify({**sender.sign(leave), "origin": "20261125" + "cd" * 16})  # tampered
