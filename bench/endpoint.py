"""What meshkit adds to a user's own FastAPI endpoint: the same plain `GET /hello` in a bare FastAPI app and
in a meshkit app (its middlewares, actuators, `/api/event` and `/metrics` routes), each under one uvicorn
worker with uvloop and httptools and no access log, read by one aiohttp session (keep-alive; 64
connections for the throughput). The meshkit app is measured twice: the request untraced (no trace
header, the default) and traced (an `X-Trace-Id` header on each request: the edge continues the trace),
the latter against the bare app sent the same header.

Both apps run at once and are measured interleaved, so that what else the machine does hits both alike: the
sequential calls alternate between them (one to each, in turn, the first of the pair alternating too), and
the throughput is taken in short bursts at 64 in flight, alternating. A difference of a few per cent is
what this figure is for (the target: at most 5%), and one app after the other cannot resolve it on a
shared machine. The figures are the medians of `--repeat` turns.

    python -m bench.endpoint [--json] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Awaitable, Callable, Iterator

import aiohttp

from bench.common import IN_FLIGHT, Figure, measure_interleaved, median_of, report, run_async
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


async def _interleaved(urls: dict[str, str], headers: dict[str, str] | None) -> dict[str, Figure]:
    """The figures of each app in `urls`, measured interleaved (bench.common.measure_interleaved)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT)) as session:

        def caller(url: str) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                async with session.get(url, headers=headers) as response:
                    body = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url} answered {response.status}: {body!r}")

            return call

        calls = {name: caller(url) for name, url in urls.items()}
        for _ in range(WARM_UP_CALLS):  # a fresh server's first thousand requests are slower
            for call in calls.values():
                await call()
        return await measure_interleaved(calls, 0)


def run(repeat: int = 3) -> list[Figure]:
    """`repeat` turns of both apps side by side, each without and with a trace header; medians compared,
    the traced figure against the bare app given the same header."""
    names = {
        "bare": "endpoint in bare FastAPI",
        "meshkit": "endpoint in a meshkit app",
    }
    runs: dict[str, list[Figure]] = {key: [] for key in ("bare", "bare traced", "meshkit", "meshkit traced")}
    for _ in range(repeat):
        with _server("bench.endpoint_apps:bare") as bare, _server("bench.endpoint_apps:meshkit_app") as mesh:
            urls = {names["bare"]: bare, names["meshkit"]: mesh}
            plain = run_async(_interleaved(urls, None))
            traced = run_async(_interleaved(urls, {"X-Trace-Id": TRACE_ID}))
        for key in ("bare", "meshkit"):
            runs[key].append(plain[names[key]])
            traced_figure = traced[names[key]]
            traced_figure.name += ", X-Trace-Id"
            runs[f"{key} traced"].append(traced_figure)
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
