"""`python -m bench [--json] [--only inprocess,http,endpoint,direct,mesh,streams,rolling,segments]
[--payloads 200,10240,204800] [--repeat 3] [--loop uvloop|asyncio]`

"segments" (not in the default list: "mesh" measures it too) is the Kafka floor beside the segments floor
(bench/kafka_floor.py: meshkit's records for each payload it segments, on bare confluent-kafka) at each
payload of `--payloads` above `segment.size`: the broker's own cost of the records a segmented event takes.

"direct" is `python -m bench.direct` (the mesh over the direct path, against the HTTP floor, at each payload).
"endpoint" is `python -m bench.endpoint` (a plain FastAPI endpoint in a bare app and in a meshkit app).
"streams" is `python -m bench.streams` (segments/s of 200 B segments over the mesh and over HTTP, beside
their floors) with its defaults but `--repeat` and `--bootstrap`; run it alone for its own options.
"rolling" is `python -m bench.rolling` with its defaults (requests lost in a rolling restart under load);
run it alone for its own options.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from bench import inprocess
from bench.common import LOOPS, Figure, report, run_async, use_loop

if TYPE_CHECKING:
    from bench.streams import StreamFigure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--json", action="store_true", help="one JSON object per line (BENCH.md)")
    parser.add_argument(
        "--only",
        default="inprocess,http,endpoint,direct,mesh,streams,rolling",
        help="comma list of: inprocess, http, endpoint, direct, mesh, streams, rolling, segments",
    )
    parser.add_argument("--payloads", default="200,10240,204800", help="mesh payload sizes in bytes")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each mesh, http and streams figure and its floor (medians)",
    )
    parser.add_argument(
        "--bootstrap", help="mesh, streams and rolling figures on this Kafka cluster, not fresh Tansu"
    )
    parser.add_argument("--loop", choices=LOOPS, default="uvloop", help="the callers' loop (floors' too)")
    args = parser.parse_args(argv)
    use_loop(args.loop)
    figures: list[Figure] = []
    extra: dict[str, float] = {}
    rolling_rows: list[dict[str, Any]] = []
    stream_rows: list[StreamFigure] = []
    failed = False
    for part in args.only.split(","):
        if part == "inprocess":
            figures += run_async(inprocess.run())
        elif part == "http":
            from bench import event_http

            figures += event_http.run(args.repeat)
        elif part == "endpoint":
            from bench import endpoint

            figures += endpoint.run(args.repeat)
        elif part == "direct":
            from bench import direct

            sizes = tuple(int(p) for p in args.payloads.split(","))
            figures += direct.run(sizes, args.repeat, args.bootstrap)
        elif part == "mesh":
            from bench import mesh

            payloads = tuple(int(p) for p in args.payloads.split(","))
            mesh_figures, extra = mesh.run(payloads, args.repeat, args.bootstrap)
            figures += mesh_figures
        elif part == "segments":
            from bench import kafka_floor

            sizes = tuple(int(p) for p in args.payloads.split(","))
            figures += kafka_floor.segments_run(sizes, args.repeat, args.bootstrap)
        elif part == "streams":
            from bench import streams

            stream_rows = streams.run(args.repeat, args.bootstrap)
            failed = failed or len(stream_rows) < 4  # a row with no run left: said on stderr
        elif part == "rolling":
            from bench import rolling

            try:
                rolling_rows = rolling.run(bootstrap=args.bootstrap)
            except rolling.BenchError as exc:  # the other figures are still reported
                print(f"rolling restart benchmark failed: {exc}", file=sys.stderr)
                failed = True
        else:
            parser.error(f"unknown benchmark {part!r}")
    if figures:
        report(figures, args.json)
    if stream_rows:
        from bench import streams

        streams.report(stream_rows, args.json)
    if extra:
        print(
            json.dumps({"name": "mesh membership", **extra})
            if args.json
            else "\n".join(f"{k}: {v}" for k, v in extra.items())
        )
    if rolling_rows:
        from bench import rolling

        rolling.report(rolling_rows, args.json)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
