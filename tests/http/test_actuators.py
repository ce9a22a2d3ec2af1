"""The actuator endpoints every app has, read from a real server configured by ``-D`` arguments.

The app is ``tests/apps/actuator_target.py``: public and private functions, and two health dependencies
(``health.database`` mandatory, ``health.cache`` optional) that a test switches off and on by sending an event
to ``health.switch`` over ``/api/event``.
"""

from __future__ import annotations

import datetime as dt
import platform as python_platform
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from meshkit import EventEnvelope, create_app, decode, encode
from tests.support.servers import UvicornProcess

ORIGIN = re.compile(r"^\d{8}[0-9a-f]{32}$")
ISO_UTC_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
UPTIME = re.compile(r"^\d+ (day|hour|minute|second)s?( \d+ (day|hour|minute|second)s?)*$")

NAME, VERSION, DESCRIPTION = "actuator-target", "2.3.4", "Actuator test app"
PROPERTIES = {
    "application.name": NAME,
    "info.app.version": VERSION,
    "info.app.description": DESCRIPTION,
    "mandatory.health.dependencies": "health.database",
    "optional.health.dependencies": "health.cache",
    "show.env.variables": "ACTUATOR_GREETING, MESH_API_KEY",
    "show.application.properties": "application.name,kafka.sasl.password,mesh.api.key,info.app.version",
    "kafka.sasl.password": "hunter2",
    "mesh.api.key": "abc123",
}
ENVIRONMENT = {"ACTUATOR_GREETING": "hello", "MESH_API_KEY": "not-for-your-eyes"}

DATABASE_INFO = {"service": "database", "href": "postgresql://127.0.0.1:5432/demo"}
CACHE_INFO = {"service": "cache", "href": "redis://127.0.0.1:6379"}


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornProcess]:
    with UvicornProcess("tests.apps.actuator_target:app", properties=PROPERTIES, env=ENVIRONMENT) as process:
        yield process


@pytest.fixture(scope="module")
def client(server: UvicornProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, trust_env=False, timeout=15) as http:
        yield http


@pytest.fixture(scope="module")
def origin(client: httpx.Client) -> str:
    value: str = client.get("/info").json()["origin"]
    return value


def switch(client: httpx.Client, dependency: str, healthy: bool) -> None:
    """Make a health dependency of the server pass or fail, with an event over /api/event."""
    event = EventEnvelope("health.switch", {"dependency": dependency, "healthy": healthy})
    # mesh.api.key is set (to check it is masked), so /api/event wants it
    response = client.post(
        "/api/event", content=encode(event), headers={"x-mesh-key": PROPERTIES["mesh.api.key"]}
    )
    assert response.status_code == 200
    assert decode(response.content).body[dependency] is healthy


@pytest.fixture
def healthy_again(client: httpx.Client) -> Iterator[None]:
    """Whatever a test switched off comes back, and the server's last health check passes again."""
    yield
    switch(client, "database", True)
    switch(client, "cache", True)
    assert client.get("/health").status_code == 200


def upstream_entry(
    route: str, required: bool, info: dict[str, str], status: int, message: str
) -> dict[str, Any]:
    return {"route": route, "required": required, **info, "status_code": status, "message": message}


# --- /info --------------------------------------------------------------------------------------------------


def test_info_describes_the_app_from_its_configuration(client: httpx.Client) -> None:
    response = client.get("/info")

    assert response.status_code == 200
    info = response.json()
    assert info["app"] == {"name": NAME, "version": VERSION, "description": DESCRIPTION}
    assert info["personality"] == "RESOURCES"
    assert ORIGIN.match(info["origin"])
    dt.datetime.strptime(info["origin"][:8], "%Y%m%d")  # the origin starts with a real date
    assert ISO_UTC_MS.match(info["time"]["start"])
    assert ISO_UTC_MS.match(info["time"]["current"])
    assert info["time"]["start"] <= info["time"]["current"]
    assert UPTIME.match(info["uptime"])
    assert info["runtime"]["python"] == python_platform.python_version()
    assert info["runtime"]["meshkit"]
    assert "additional_info" not in info


def test_the_origin_is_the_same_on_every_endpoint(client: httpx.Client, origin: str) -> None:
    for path in ("/info/lib", "/info/routes", "/env", "/health"):
        assert client.get(path).json()["origin"] == origin, path


def test_info_lib_lists_the_distributions_the_app_runs_on(client: httpx.Client) -> None:
    lib = client.get("/info/lib").json()

    names = {entry.split("==")[0].lower() for entry in lib["library"]}
    assert {"fastapi", "meshkit", "uvicorn", "pydantic", "msgpack"} <= names
    assert lib["total"] == len(lib["library"])


def test_info_routes_shows_the_public_routes_and_not_the_private_one(
    client: httpx.Client, origin: str
) -> None:
    routing = client.get("/info/routes").json()["routing"]

    assert routing["routes"] == {
        route: {origin: f"{NAME}, RESOURCES"}
        for route in ("demo.public", "health.cache", "health.database", "health.switch")
    }
    assert routing["nodes"] == {origin: {"name": NAME, "version": VERSION, "personality": "RESOURCES"}}


# --- /env ---------------------------------------------------------------------------------------------------


def test_env_shows_every_function_public_and_private_with_its_instances(client: httpx.Client) -> None:
    routing = client.get("/env").json()["routing"]

    assert routing == {
        "public": {"demo.public": 5, "health.cache": 1, "health.database": 1, "health.switch": 1},
        "private": {"demo.private": 3},
    }


def test_env_shows_only_the_selected_variables_and_properties_with_secrets_masked(
    client: httpx.Client,
) -> None:
    env = client.get("/env").json()

    assert env["env"] == {"ACTUATOR_GREETING": "hello", "MESH_API_KEY": "*****"}
    assert env["properties"] == {
        "application.name": NAME,
        "kafka.sasl.password": "*****",
        "mesh.api.key": "*****",
        "info.app.version": VERSION,
    }
    text = client.get("/env").text
    for secret in ("hunter2", "abc123", "not-for-your-eyes"):
        assert secret not in text


# --- /health and /livenessprobe -----------------------------------------------------------------------------


def test_health_is_up_when_every_dependency_answers(client: httpx.Client, origin: str) -> None:
    response = client.get("/health")

    assert response.status_code == 200
    assert response.json() == {
        "upstream": [
            upstream_entry("health.database", True, DATABASE_INFO, 200, "database is fine"),
            upstream_entry("health.cache", False, CACHE_INFO, 200, "cache is fine"),
        ],
        "status": "UP",
        "origin": origin,
        "name": NAME,
    }


def test_the_livenessprobe_says_ok_in_plain_text(client: httpx.Client) -> None:
    response = client.get("/livenessprobe")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "OK"


@pytest.mark.usefixtures("healthy_again")
def test_a_failing_optional_dependency_leaves_the_app_up(client: httpx.Client) -> None:
    switch(client, "cache", False)

    response = client.get("/health")

    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "UP"
    assert health["upstream"][1] == upstream_entry(
        "health.cache", False, CACHE_INFO, 500, "cache unreachable"
    )
    assert client.get("/livenessprobe").status_code == 200


@pytest.mark.usefixtures("healthy_again")
def test_a_failing_mandatory_dependency_takes_the_app_down_until_it_recovers(
    client: httpx.Client, server: UvicornProcess
) -> None:
    switch(client, "database", False)

    response = client.get("/health")
    assert response.status_code == 400
    health = response.json()
    assert health["status"] == "DOWN"
    assert health["upstream"][0] == upstream_entry(
        "health.database", True, DATABASE_INFO, 503, "database is down"
    )
    liveness = client.get("/livenessprobe")
    assert liveness.status_code == 400
    assert liveness.headers["content-type"].startswith("text/plain")
    server.wait_for_log("Health is now DOWN")

    switch(client, "database", True)
    assert client.get("/livenessprobe").status_code == 400, "the probe reports the last check until the next"
    response = client.get("/health")
    assert (response.status_code, response.json()["status"]) == (200, "UP")
    liveness = client.get("/livenessprobe")
    assert (liveness.status_code, liveness.text) == (200, "OK")


def test_a_mandatory_dependency_that_is_not_a_route_is_down_with_404() -> None:
    properties = {**PROPERTIES, "mandatory.health.dependencies": "health.database, health.missing"}
    with (
        UvicornProcess("tests.apps.actuator_target:app", properties=properties) as server,
        httpx.Client(base_url=server.url, trust_env=False, timeout=15) as http,
    ):
        response = http.get("/health")

        assert response.status_code == 400
        health = response.json()
        assert health["status"] == "DOWN"
        assert [entry["route"] for entry in health["upstream"]] == [
            "health.database",
            "health.missing",
            "health.cache",
        ]
        assert health["upstream"][1] == upstream_entry(
            "health.missing", True, {}, 404, "Route health.missing not found"
        )
        assert health["upstream"][0]["status_code"] == 200
        assert http.get("/livenessprobe").status_code == 400


async def test_health_is_down_while_the_app_drains_and_liveness_is_not() -> None:
    app = create_app(name="draining-app", properties={"cloud.connector": "none", "drain.timeout": "1"})
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://drain.test") as client:
            assert (await client.get("/health")).status_code == 200
            await app.state.platform.drain()
            response = await client.get("/health")
            assert response.status_code == 503
            assert response.json()["status"] == "DOWN" and response.json()["draining"] is True
            assert (await client.get("/livenessprobe")).status_code == 200
            assert (await client.get("/info")).status_code == 200  # still serving
