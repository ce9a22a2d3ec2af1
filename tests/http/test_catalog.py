"""The route catalog and the AsyncAPI document of a real app (tests/apps/catalog_target.py under
`meshkit run`): each public route's input and output JSON Schema from its annotations, "any" where it has
none, whether it is safe to retry and whether it streams; the document valid against AsyncAPI 3.0.0's own
JSON Schema (tests/http/data)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from tests.support.servers import UvicornProcess

ASYNCAPI_SCHEMA = json.loads((Path(__file__).parent / "data" / "asyncapi-3.0.0.schema.json").read_text())
PUBLIC = ["shape.area", "shape.count", "shape.echo", "shape.envelope", "shape.points"]


@pytest.fixture(scope="module")
def app() -> Iterator[UvicornProcess]:
    with UvicornProcess("tests.apps.catalog_target:app") as process:
        yield process


def get(app: UvicornProcess, path: str, **params: Any) -> Any:
    response = httpx.get(app.url + path, params=params, timeout=10, trust_env=False)
    assert response.status_code == 200, response.text
    return response.json()


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_the_asyncapi_document_is_valid_asyncapi_3(app: UvicornProcess) -> None:
    document = get(app, "/asyncapi.json")
    errors = sorted(jsonschema.Draft7Validator(ASYNCAPI_SCHEMA).iter_errors(document), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])
    assert document["asyncapi"] == "3.0.0"
    assert document["info"] == {
        "title": "catalog-target",
        "version": "3.1.4",
        "description": "Catalog test app",
    }
    assert document["servers"]["http"]["host"] == f"127.0.0.1:{app.port}"
    assert document["servers"]["http"]["pathname"] == "/api/event"


def test_the_validation_would_catch_a_broken_document(app: UvicornProcess) -> None:
    document = get(app, "/asyncapi.json")
    document["operations"]["shape.area"]["action"] = "answer"  # neither send nor receive
    del document["info"]["version"]
    problems = list(jsonschema.Draft7Validator(ASYNCAPI_SCHEMA).iter_errors(document))
    assert len(problems) >= 2


def test_each_public_route_is_an_operation_named_by_it_with_its_payload_schemas(app: UvicornProcess) -> None:
    document = get(app, "/asyncapi.json")
    assert sorted(document["operations"]) == PUBLIC  # shape.secret is private: never in it
    area = document["operations"]["shape.area"]
    assert area["action"] == "receive" and area["x-meshkit-idempotent"] is True
    assert area["x-meshkit-instances"] == 4 and area["x-meshkit-streaming"] is False
    assert resolve(document, area["channel"]["$ref"])["address"] == "shape.area"
    request = resolve(document, resolve(document, area["messages"][0]["$ref"])["$ref"])
    reply = resolve(document, resolve(document, area["reply"]["messages"][0]["$ref"])["$ref"])
    assert request["payload"]["$ref"] == "#/components/schemas/Shape"
    assert reply["payload"]["$ref"] == "#/components/schemas/Area"
    shape = resolve(document, request["payload"]["$ref"])
    assert shape["required"] == ["name", "points"]
    assert shape["properties"]["points"]["items"]["$ref"] == "#/components/schemas/Point"
    assert resolve(document, "#/components/schemas/Point")["properties"]["x"]["type"] == "number"
    # every reference in the document points at something in it
    for ref in _refs(document):
        resolve(document, ref)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_the_catalog_has_each_route_s_contract(app: UvicornProcess) -> None:
    table = get(app, "/info/routes", detail="true")
    catalog = table["catalog"]
    origin = table["origin"]
    assert sorted(catalog) == PUBLIC
    area = catalog["shape.area"]
    assert area["input"]["title"] == "Shape" and area["input"]["required"] == ["name", "points"]
    assert area["input"]["$defs"]["Point"]["required"] == ["x", "y"]  # self-contained: its $defs inside
    assert area["output"]["title"] == "Area"
    assert (area["idempotent"], area["streaming"], area["described"]) == (True, False, True)
    assert area["instances"] == {origin: {"app": "catalog-target", "instances": 4}}
    assert catalog["shape.echo"]["input"] == {} and catalog["shape.echo"]["output"] == {}  # "any"
    assert catalog["shape.count"]["input"] == {"items": {"type": "integer"}, "type": "array"}
    assert catalog["shape.count"]["output"] == {"type": "integer"}
    points = catalog["shape.points"]
    assert points["streaming"] is True and points["output"]["title"] == "Point"  # one segment
    assert catalog["shape.envelope"]["output"] == {}  # an EventEnvelope: any body
    assert "catalog" not in get(app, "/info/routes")  # only when asked for


def test_a_bad_detail_parameter_is_a_clear_422(app: UvicornProcess) -> None:
    response = httpx.get(app.url + "/info/routes", params={"detail": "maybe"}, timeout=10, trust_env=False)
    assert response.status_code == 422
    assert "detail" in response.text
