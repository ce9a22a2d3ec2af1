"""What meshkit adds to a user's own FastAPI endpoint: the same plain `GET /hello` in a bare FastAPI app and
in a meshkit app (its middlewares, actuators, `/api/event` and `/metrics` routes), each under one uvicorn
worker with uvloop and httptools and no access log, read by one aiohttp session (keep-alive; 64
connections for the throughput). The meshkit app is measured twice: the request untraced (no trace
header, the default) and traced (an `X-Trace-Id` header on each request: the edge continues the trace),
the latter against the bare app sent the same header. The figures are the medians of `--repeat` turns.

    python -m bench.endpoint [--json] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Awaitable, Callable, Iterator

import aiohttp

from bench.common import IN_FLIGHT, Figure, measure, median_of, report, run_async
from bench.processes import served
from meshkit.devbroker import free_port

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
WARM_UP_CALLS = 2_000


@contextlib.contextmanager
def _server(app: str) -> Iterator[str]:
    port = free_port()
    args = ["uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    args += ["--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log"]
    base = f"http://127.0.0.1:{port}"
    with served(args, base + "/hello"):
        yield base + "/hello"


async def _figures(app: str, url: str) -> tuple[Figure, Figure]:
    """The endpoint without a trace header, then with one (the same bytes to either app)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT)) as session:

        def caller(headers: dict[str, str] | None) -> Callable[[], Awaitable[bytes]]:
            async def call() -> bytes:
                async with session.get(url, headers=headers) as response:
                    body = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url} answered {response.status}: {body!r}")
                return body

            return call

        plain, traced = caller(None), caller({"X-Trace-Id": TRACE_ID})
        for _ in range(WARM_UP_CALLS):  # a fresh server's first thousand requests are slower
            await plain()
        return (
            await measure(f"endpoint in {app}", 0, plain),
            await measure(f"endpoint in {app}, X-Trace-Id", 0, traced),
        )


def run(repeat: int = 3) -> list[Figure]:
    """`repeat` turns of the bare app and the meshkit app, each without and with a trace header; medians
    compared, the traced figure against the bare app given the same header."""
    runs: dict[str, list[Figure]] = {"bare": [], "bare traced": [], "meshkit": [], "meshkit traced": []}
    for _ in range(repeat):
        for name, app in (("bare", "bare FastAPI"), ("meshkit", "a meshkit app")):
            with _server(f"bench.endpoint_apps:{'bare' if name == 'bare' else 'meshkit_app'}") as url:
                plain, traced = run_async(_figures(app, url))
            runs[name].append(plain)
            runs[f"{name} traced"].append(traced)
    floor, traced_floor = median_of(runs["bare"]), median_of(runs["bare traced"])
    return [
        floor,
        median_of(runs["meshkit"]).against(floor),
        traced_floor,
        median_of(runs["meshkit traced"]).against(traced_floor),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.endpoint", description=__doc__)
    parser.add_argument("--json", action="store_true", help="one JSON object per line (BENCH.md)")
    parser.add_argument("--repeat", type=int, default=3, help="turns of each app (medians)")
    args = parser.parse_args(argv)
    report(run(args.repeat), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
