"""The echo app the mesh benchmark calls: `bench.echo`, 64 instances, payload back unchanged."""

from __future__ import annotations

from typing import Any

from meshkit import FunctionRegistry, create_app

functions = FunctionRegistry()


@functions.route("bench.echo", instances=64)
async def echo(headers: dict[str, str], body: Any, instance: int) -> Any:
    return body


app = create_app(name="bench-echo", functions=functions, properties={"cloud.connector": "kafka"})
