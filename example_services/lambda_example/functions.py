"""The functions of the lambda example."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

from meshkit import AppError, current_platform, route

_sequence = itertools.count(1)


class PoJo(BaseModel):
    id: int
    name: str
    address: str
    date: dt.datetime
    instance: int
    seq: int
    origin: str


class Text(BaseModel):
    text: str


@route("hello.world", instances=20, idempotent=True)
async def hello_world(headers: dict[str, str], body: Any, instance: int) -> dict[str, Any]:
    """Echo: what came in, and which instance of which app answered."""
    return {"headers": headers, "body": body, "instance": instance, "origin": current_platform().origin}


@route("hello.pojo", instances=10, idempotent=True)
async def hello_pojo(headers: dict[str, str], body: Any, instance: int) -> PoJo:
    """A PoJo for the `id` header, as the Mercury lambda example returns it."""
    raw_id = headers.get("id")
    if raw_id is None:
        raise AppError(400, "Missing parameter 'id' in headers")
    try:
        pojo_id = int(raw_id)
    except ValueError:
        raise AppError(400, f"Parameter 'id' must be an integer, got {raw_id!r}") from None
    return PoJo(
        id=pojo_id,
        name="Simple PoJo class",
        address="100 World Blvd, Planet Earth",
        date=dt.datetime.now(dt.UTC),
        instance=instance,
        seq=next(_sequence),
        origin=current_platform().origin,
    )


@route("hello.tokens", instances=20)
async def hello_tokens(body: Text) -> AsyncIterator[str]:
    """A stream: the text's words, one segment each, then the end (as a language model streams tokens)."""
    for word in body.text.split():
        yield word
