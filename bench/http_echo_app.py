"""The echo app the Event-over-HTTP benchmark calls: `bench.echo`, 64 instances, payload back unchanged.

Not bench/echo_app.py: that one sets `cloud.connector=kafka` in `create_app(properties=...)`, which wins
over a `-D` argument, and this benchmark needs no broker.
"""

from __future__ import annotations

from typing import Any

from meshkit import FunctionRegistry, create_app

functions = FunctionRegistry()


@functions.route("bench.echo", instances=64)
async def echo(headers: dict[str, str], body: Any, instance: int) -> Any:
    return body


app = create_app(name="bench-http-echo", functions=functions, properties={"cloud.connector": "none"})
