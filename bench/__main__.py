"""`python -m bench [--json] [--only inprocess,http,mesh] [--payloads 200,10240,204800] [--repeat 3]
[--loop uvloop|asyncio]`"""

from __future__ import annotations

import argparse
import json
import sys

from bench import inprocess
from bench.common import LOOPS, Figure, report, run_async, use_loop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--json", action="store_true", help="one JSON object per line (BENCH.md)")
    parser.add_argument("--only", default="inprocess,http,mesh", help="comma list of: inprocess, http, mesh")
    parser.add_argument("--payloads", default="200,10240,204800", help="mesh payload sizes in bytes")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each mesh and http figure and its floor (medians)"
    )
    parser.add_argument("--bootstrap", help="mesh figures on this Kafka cluster, not fresh Tansu")
    parser.add_argument("--loop", choices=LOOPS, default="uvloop", help="the callers' loop (floors' too)")
    args = parser.parse_args(argv)
    use_loop(args.loop)
    figures: list[Figure] = []
    extra: dict[str, float] = {}
    for part in args.only.split(","):
        if part == "inprocess":
            figures += run_async(inprocess.run())
        elif part == "http":
            from bench import event_http

            figures += event_http.run(args.repeat)
        elif part == "mesh":
            from bench import mesh

            payloads = tuple(int(p) for p in args.payloads.split(","))
            mesh_figures, extra = mesh.run(payloads, args.repeat, args.bootstrap)
            figures += mesh_figures
        else:
            parser.error(f"unknown benchmark {part!r}")
    report(figures, args.json)
    if extra:
        print(
            json.dumps({"name": "mesh membership", **extra})
            if args.json
            else "\n".join(f"{k}: {v}" for k, v in extra.items())
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
