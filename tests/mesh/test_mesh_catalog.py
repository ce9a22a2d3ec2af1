"""The route catalog across the mesh (docs/protocol/control.md, `contracts`): any app's
`/info/routes?detail=true` shows every public route of the mesh with the contract its owner published, the
newcomer's too and an earlier app's to a newcomer, with real processes on a real broker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from meshkit.devbroker import DevBroker
from tests.support.eventually import wait_until
from tests.support.mesh_fixtures import LAMBDA_APP, REST_APP, Mesh, Node

pytestmark = pytest.mark.kafka


@pytest.fixture
def mesh(fresh_kafka_broker: DevBroker) -> Iterator[Mesh]:
    with Mesh(fresh_kafka_broker) as running:
        yield running


def catalog_of(app: Node) -> dict[str, dict[str, Any]]:
    catalog: dict[str, dict[str, Any]] = app.get_json("/info/routes?detail=true")["catalog"]
    return catalog


def described_by(app: Node, route: str, origin: str) -> dict[str, Any] | None:
    entry = catalog_of(app).get(route)
    if entry is None or not entry["described"] or origin not in entry["instances"]:
        return None
    return entry


def test_every_app_sees_the_contracts_of_the_routes_its_peers_serve(mesh: Mesh) -> None:
    mesh.monitor()
    lambda_app = mesh.app(LAMBDA_APP)  # first: it hears the REST example's join and its contracts
    rest = mesh.app(REST_APP)  # the newcomer: it hears the lambda example's answer to its join
    own = catalog_of(lambda_app)["hello.pojo"]
    assert own["input"] == {} and own["output"]["title"] == "PoJo"  # body: Any; returns a PoJo
    seen = wait_until(
        lambda: described_by(rest, "hello.pojo", lambda_app.origin),
        timeout=15,
        what="the lambda example's contract of hello.pojo at the REST example",
        describe=lambda: catalog_of(rest),
    )
    assert (seen["input"], seen["output"], seen["idempotent"]) == (own["input"], own["output"], True)
    assert seen["instances"][lambda_app.origin] == {"app": "lambda-example", "instances": 10}
    tokens = catalog_of(rest)["hello.tokens"]
    assert tokens["streaming"] is True and tokens["input"]["title"] == "Text"
    assert tokens["output"] == {"type": "string"}  # one segment of AsyncIterator[str]
    # and the other way: the REST example's routes, described at the lambda example
    rest_routes = {r for r, e in catalog_of(rest).items() if rest.origin in e["instances"]}
    assert rest_routes, "the REST example serves public routes"
    for route in rest_routes:
        wait_until(
            lambda route=route: described_by(lambda_app, route, rest.origin),
            timeout=15,
            what=f"the REST example's contract of {route} at the lambda example",
        )


def test_a_route_of_an_app_that_left_leaves_the_catalog(mesh: Mesh) -> None:
    mesh.monitor()
    lambda_app = mesh.app(LAMBDA_APP)
    rest = mesh.app(REST_APP)
    wait_until(lambda: described_by(rest, "hello.pojo", lambda_app.origin), timeout=15, what="hello.pojo")
    both = catalog_of(rest)["hello.world"]["instances"]  # both examples serve hello.world
    assert set(both) == {lambda_app.origin, rest.origin}
    lambda_app.process.stop()
    wait_until(
        lambda: "hello.pojo" not in catalog_of(rest), timeout=15, what="hello.pojo gone from the catalog"
    )
    assert set(catalog_of(rest)["hello.world"]["instances"]) == {rest.origin}
