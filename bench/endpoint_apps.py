"""The apps of the endpoint benchmark (bench/endpoint.py): the same plain `GET /hello` in a bare FastAPI app
and in a meshkit app (`create_app`, no connector), each served by one uvicorn worker."""

from __future__ import annotations

from fastapi import FastAPI

from meshkit import create_app

HELLO = {"hello": "world"}

bare = FastAPI()


@bare.get("/hello")
async def bare_hello() -> dict[str, str]:
    return HELLO


meshkit_app = create_app(name="bench-endpoint", functions=[], properties={"cloud.connector": "none"})


@meshkit_app.get("/hello")
async def meshkit_hello() -> dict[str, str]:
    return HELLO
