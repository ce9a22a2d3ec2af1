"""The http floor's server (BENCH.md): one FastAPI POST endpoint that answers with the request body unchanged.

Run as `uvicorn bench.http_floor_app:app --workers 1 --loop uvloop --http httptools` by bench/event_http.py.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response

app = FastAPI()


@app.post("/echo")
async def echo(request: Request) -> Response:
    return Response(content=await request.body(), media_type="application/octet-stream")
