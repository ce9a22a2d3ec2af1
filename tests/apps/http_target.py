"""The callee of tests/http/test_event_over_http.py: a few functions with every kind of outcome.

It lists its functions explicitly (a registry of its own), so it never picks up routes other modules declare.
Run it with ``meshkit run tests.apps.http_target:app --port P [-Dmax.event.size=N]``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from meshkit import AppError, EventEnvelope, FunctionRegistry, PostOffice, create_app

registry = FunctionRegistry()
_recorded: list[Any] = []


class Greeting(BaseModel):
    name: str
    count: int


@registry.route("test.echo", instances=4)
async def echo(headers: dict[str, str], body: Any) -> EventEnvelope:
    """The body and the headers back, as they arrived (plus the read-only `my_*` headers)."""
    return EventEnvelope(body=body, headers=headers)


@registry.route("test.slow", instances=4)
async def slow(headers: dict[str, str], body: Any) -> str:
    """Answers "done" after `seconds` (header, default 3): longer than a 1 s ttl.

    With a `mark` header, it records the mark when it starts (see `test.recorded`).
    """
    if "mark" in headers:
        _recorded.append(headers["mark"])
    await asyncio.sleep(float(headers.get("seconds", "3")))
    return "done"


@registry.route("test.secret", private=True)
async def secret(body: Any) -> str:
    return "callable in process only"


@registry.route("test.conflict")
async def conflict(body: Any) -> None:
    raise AppError(409, "Already exists")


@registry.route("test.crash")
def crash(body: Any) -> None:
    raise RuntimeError("boom")


@registry.route("test.greeting")
async def greeting(body: Greeting) -> Greeting:
    """A PoJo in, a PoJo out."""
    return Greeting(name=f"hello {body.name}", count=body.count + 1)


@registry.route("test.forward")
async def forward(headers: dict[str, str], body: Any) -> None:
    """Passes the body on to `test.record`: the visible trace of an event nobody waits for."""
    await PostOffice().send("test.record", body)


@registry.route("test.record")
async def record(body: Any) -> None:
    _recorded.append(body)


@registry.route("test.time.left")
async def time_left(body: Any) -> dict[str, float]:
    """What is left of its deadline: seconds, as its own requests would get them."""
    return {"left": PostOffice().time_left(3600)}


@registry.route("test.recorded")
async def recorded(body: Any) -> list[Any]:
    """What `test.record` and `test.slow` have recorded so far."""
    return list(_recorded)


app = create_app(name="http-target", config_dir=Path(__file__).parent, functions=registry)
