"""The seed's two example services, each a real process on a free port (the walk-through without the mesh).

The REST example answers ``GET /api/pojo/http/{id}`` by calling ``hello.pojo`` in the lambda example over
Event over HTTP, at the address given by ``-Dlambda.example.endpoint``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from meshkit import EventEnvelope, decode, encode
from tests.support.servers import REPO, UvicornProcess

LAMBDA_APP = "example_services.lambda_example.main:app"
REST_APP = "example_services.rest_example.main:app"
ISO_UTC_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def rest_example(lambda_example: UvicornProcess) -> UvicornProcess:
    return UvicornProcess(REST_APP, properties={"lambda.example.endpoint": lambda_example.event_url})


@pytest.fixture(scope="module")
def lambda_example() -> Iterator[UvicornProcess]:
    with UvicornProcess(LAMBDA_APP) as process:
        yield process


@pytest.fixture(scope="module")
def rest(lambda_example: UvicornProcess) -> Iterator[UvicornProcess]:
    with rest_example(lambda_example) as process:
        yield process


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=15) as client:
        yield client


def origin_of(http: httpx.Client, server: UvicornProcess) -> str:
    origin: str = http.get(server.url + "/info").json()["origin"]
    return origin


def call(http: httpx.Client, server: UvicornProcess, event: EventEnvelope) -> EventEnvelope:
    response = http.post(server.event_url, content=encode(event))
    assert response.status_code == 200, response.content
    return decode(response.content)


# --- the REST example fetches a PoJo from the lambda example ------------------------------------------------


def test_the_rest_example_gets_a_pojo_from_the_lambda_example_over_http(
    http: httpx.Client, rest: UvicornProcess, lambda_example: UvicornProcess
) -> None:
    response = http.get(rest.url + "/api/pojo/http/1")

    assert response.status_code == 200
    pojo = response.json()
    assert set(pojo) == {"id", "name", "address", "date", "instance", "seq", "origin"}
    assert pojo["id"] == 1
    assert pojo["name"] == "Simple PoJo class"
    assert pojo["address"] == "100 World Blvd, Planet Earth"
    assert ISO_UTC_MS.match(pojo["date"])
    assert dt.datetime.fromisoformat(pojo["date"]).utcoffset() == dt.timedelta(0)
    assert 1 <= pojo["instance"] <= 10
    assert isinstance(pojo["seq"], int)
    assert pojo["origin"] == origin_of(http, lambda_example)
    assert pojo["origin"] != origin_of(http, rest)


def test_each_pojo_has_the_requested_id_and_the_next_sequence_number(
    http: httpx.Client, rest: UvicornProcess
) -> None:
    first = http.get(rest.url + "/api/pojo/http/7").json()
    second = http.get(rest.url + "/api/pojo/http/8").json()

    assert (first["id"], second["id"]) == (7, 8)
    assert second["seq"] > first["seq"]


def test_a_non_integer_id_is_refused_by_fastapi_with_422(http: httpx.Client, rest: UvicornProcess) -> None:
    response = http.get(rest.url + "/api/pojo/http/one")

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "pojo_id"]


def test_the_mesh_path_without_a_connector_says_the_route_is_not_found(
    http: httpx.Client, rest: UvicornProcess
) -> None:
    response = http.get(rest.url + "/api/pojo/mesh/1")

    assert response.status_code == 404
    assert response.json() == {"detail": "Route hello.pojo not found"}


def test_the_token_relay_without_a_connector_answers_404_before_any_event(
    http: httpx.Client, rest: UvicornProcess
) -> None:
    response = http.get(rest.url + "/api/tokens/mesh", params={"text": "a b"})

    assert response.status_code == 404
    assert response.json() == {"type": "error", "status": 404, "message": "Route hello.tokens not found"}


def test_the_rest_example_says_503_when_the_lambda_example_is_gone(http: httpx.Client) -> None:
    """A pair of its own: this test stops the lambda example. The REST call fails at once, and clearly."""
    with UvicornProcess(LAMBDA_APP) as lambda_example, rest_example(lambda_example) as rest:
        assert http.get(rest.url + "/api/pojo/http/1").status_code == 200  # a pooled connection now exists

        assert lambda_example.stop() is not None
        response = http.get(rest.url + "/api/pojo/http/1", timeout=10)

        assert response.status_code == 503
        assert response.json()["detail"].startswith(f"Unable to reach {lambda_example.event_url}")


# --- the functions, called directly -------------------------------------------------------------------------


def test_hello_world_echoes_headers_and_body(http: httpx.Client, lambda_example: UvicornProcess) -> None:
    body: dict[str, Any] = {"greeting": "hi", "numbers": [1, 2, 3]}

    reply = call(http, lambda_example, EventEnvelope("hello.world", body, {"user": "alice"}))

    assert reply.status == 200
    assert reply.body["headers"] == {"user": "alice", "my_route": "hello.world"}
    assert reply.body["body"] == body
    assert 1 <= reply.body["instance"] <= 20
    assert reply.body["origin"] == origin_of(http, lambda_example)


def test_hello_tokens_streams_the_words_over_event_over_http(
    http: httpx.Client, lambda_example: UvicornProcess
) -> None:
    event = EventEnvelope("hello.tokens", {"text": "one  two three"})
    headers = {"accept": "text/event-stream"}
    response = http.post(lambda_example.event_url, content=encode(event), headers=headers)

    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in response.text.split("\n\n") if f]
    assert frames[0].startswith("event: envelope\ndata: ")  # the head carries the first word, as an envelope
    assert frames[1:3] == ["data: two", "data: three"]
    assert frames[3].startswith("event: envelope\ndata: ")  # the end
    # without text/event-stream in Accept: the engines' 406
    refused = http.post(lambda_example.event_url, content=encode(event))
    assert refused.status_code == 406
    assert (
        decode(refused.content).body == "Streaming function requires a caller that accepts text/event-stream"
    )
    # a body without its text: 400, before any segment
    bad = http.post(
        lambda_example.event_url, content=encode(EventEnvelope("hello.tokens", {})), headers=headers
    )
    assert decode(bad.content).status == 400


def test_hello_pojo_needs_an_integer_id_header(http: httpx.Client, lambda_example: UvicornProcess) -> None:
    reply = call(http, lambda_example, EventEnvelope("hello.pojo"))
    assert (reply.status, reply.body) == (400, "Missing parameter 'id' in headers")

    reply = call(http, lambda_example, EventEnvelope("hello.pojo", headers={"id": "x"}))
    assert (reply.status, reply.body) == (400, "Parameter 'id' must be an integer, got 'x'")


def test_the_rest_example_has_its_own_hello_world(http: httpx.Client, rest: UvicornProcess) -> None:
    reply = call(http, rest, EventEnvelope("hello.world", "ping"))

    assert reply.body["body"] == "ping"
    assert reply.body["origin"] == origin_of(http, rest)
    # hello.pojo lives in the lambda example only
    assert http.post(rest.event_url, content=encode(EventEnvelope("hello.pojo"))).status_code == 404


def test_each_example_shows_its_own_configuration(
    http: httpx.Client, lambda_example: UvicornProcess, rest: UvicornProcess
) -> None:
    lambda_info = http.get(lambda_example.url + "/info").json()
    rest_info = http.get(rest.url + "/info").json()

    assert (lambda_info["app"]["name"], lambda_info["personality"]) == ("lambda-example", "APP")
    assert (rest_info["app"]["name"], rest_info["personality"]) == ("rest-example", "WEB")
    rest_env = http.get(rest.url + "/env").json()
    assert rest_env["properties"]["lambda.example.endpoint"] == lambda_example.event_url


# --- one process, both apps ---------------------------------------------------------------------------------

BOTH_APPS = """
import asyncio, json
import example_services.lambda_example.main as lambda_main
import example_services.rest_example.main as rest_main

async def main():
    async with lambda_main.app.router.lifespan_context(lambda_main.app):
        async with rest_main.app.router.lifespan_context(rest_main.app):
            print(json.dumps({
                name: {
                    "name": module.app.state.platform.name,
                    "routes": sorted(spec.route for spec in module.app.state.platform.functions()),
                }
                for name, module in (("lambda", lambda_main), ("rest", rest_main))
            }))

asyncio.run(main())
"""


def test_both_examples_import_and_start_in_one_process_without_route_conflicts() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", BOTH_APPS], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "lambda": {"name": "lambda-example", "routes": ["hello.pojo", "hello.tokens", "hello.world"]},
        "rest": {"name": "rest-example", "routes": ["hello.world"]},
    }
