"""`python -m bench [--json] [--only inprocess,http,kafka]`"""

from __future__ import annotations

import argparse
import asyncio
import sys

from bench import inprocess
from bench.common import Figure, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--json", action="store_true", help="one JSON object per line (BENCH.md)")
    parser.add_argument("--only", default="inprocess", help="comma list of: inprocess")
    args = parser.parse_args(argv)
    figures: list[Figure] = []
    for part in args.only.split(","):
        if part == "inprocess":
            figures += asyncio.run(inprocess.run())
        else:
            parser.error(f"unknown benchmark {part!r}")
    report(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
