"""The app of tests/http/test_catalog.py: functions whose annotations say what they take and return, one
with none, a stream, a private one and a plain `def`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, Field

from meshkit import EventEnvelope, FunctionRegistry, create_app


class Point(BaseModel):
    x: float
    y: float


class Shape(BaseModel):
    name: str = Field(min_length=1)
    points: list[Point]


class Area(BaseModel):
    shape: str
    area: float


registry = FunctionRegistry()


@registry.route("shape.area", instances=4, idempotent=True)
async def area(headers: dict[str, str], shape: Shape) -> Area:
    return Area(shape=shape.name, area=0.0)


@registry.route("shape.echo")
async def echo(body):  # type: ignore[no-untyped-def]  # no annotations on purpose: "any" both ways
    return body


@registry.route("shape.count")
def count(headers: dict[str, str], body: list[int], instance: int) -> int:
    return len(body)


@registry.route("shape.points", instances=2)
async def points(body: Shape) -> AsyncIterator[Point]:
    for point in body.points:
        yield point


@registry.route("shape.envelope")
async def envelope(body: dict[str, Any]) -> EventEnvelope:
    return EventEnvelope(None, body, status=201)


@registry.route("shape.secret", private=True)
async def secret(body: int) -> int:
    return body


app = create_app(name="catalog-target", version="3.1.4", description="Catalog test app", functions=registry)
