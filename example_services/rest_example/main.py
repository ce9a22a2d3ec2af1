"""`uvicorn example_services.rest_example.main:app --port 8083`"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import HTTPException, Response

from meshkit import AppError, PostOffice, create_app, current_platform
from meshkit.http import sse_response

app = create_app(
    config_dir=Path(__file__).parent, personality="WEB", scan=["example_services.rest_example.functions"]
)


async def _pojo(pojo_id: int, endpoint: str | None) -> Any:
    po = PostOffice()
    try:
        reply = await po.request("hello.pojo", headers={"id": str(pojo_id)}, timeout=5.0, endpoint=endpoint)
    except AppError as exc:
        raise HTTPException(exc.status, exc.message) from exc
    except TimeoutError as exc:
        raise HTTPException(408, str(exc)) from exc
    if reply.is_error:
        raise HTTPException(reply.status, reply.error_message())
    return reply.body


@app.get("/api/pojo/http/{pojo_id}")
async def pojo_over_http(pojo_id: int) -> Any:
    """hello.pojo in the lambda example, called over Event over HTTP."""
    endpoint = current_platform().config.get("lambda.example.endpoint", "http://127.0.0.1:8085/api/event")
    return await _pojo(pojo_id, endpoint)


@app.get("/api/pojo/mesh/{pojo_id}")
async def pojo_over_mesh(pojo_id: int) -> Any:
    """hello.pojo wherever it runs in the mesh: same call, no address."""
    return await _pojo(pojo_id, None)


@app.get("/api/tokens/mesh")
async def tokens_over_mesh(text: str) -> Response:
    """hello.tokens in the lambda example, through the mesh, relayed to the HTTP caller as Server-Sent
    Events: one `data:` line per word, in order."""
    return await sse_response(PostOffice().stream("hello.tokens", {"text": text}, timeout=5.0))
