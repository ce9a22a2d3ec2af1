"""`python -m bench.scale_sim`: one worker process of simulated apps for `python -m bench.scale`.

Each sim is a meshkit app instance as far as the control plane can tell: a Platform of its own (its
origin, two public functions: `scale.all`, which every sim serves, and `scale.app-<n>`, that of its app:
instance i is of app i % `--names`, as a mesh of N instances is of fewer apps scaled out), meshkit's own
MeshNode with its own Ed25519 identity, its own websocket to a presence monitor (meshkit's
PresenceClient), its own virtual topic, and real signed control records on the broker. What makes them
light enough to run hundreds to a process:

- they share one Kafka producer and one consumer (bench/scale_kafka.py): a record of the group's partition
  is fetched once and handed to every sim's transport, which decodes it as each app would;
- they share parsed public keys, the outcome of verifying identical signed bytes, and the decoding of
  identical websocket frames (`share_crypto`): in a mesh each app has its own CPU for its N - 1 peers'
  keys, signatures and cards; here that would be N^2 Ed25519 operations and JSON decodes on two cores,
  the simulation's cost rather than meshkit's. Every signature is still checked, once per process, and a
  message that does not verify is refused as in any app; every app still takes every card into its own
  routing table.

It talks to the coordinator in JSON lines: commands on stdin (`join`, `watch`, `leave`, `stop`), events
on stdout (`ready` with the sims' origins, `converged`, `gone`, `left`), all times on the system-wide
monotonic clock. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import sys
import threading
import time
import types
from collections.abc import Callable
from typing import Any

import msgpack

from bench.common import run_async
from bench.scale_kafka import SharedKafka, SimConnector
from meshkit import AppConfig, Platform
from meshkit.core import make_spec
from meshkit.mesh import MeshNode, join_mesh

SHARED_ROUTE = "scale.all"
CHECK_EVERY = 0.02  # seconds between looks at the sims' routing tables

log = logging.getLogger("bench.scale")


async def _echo(body: Any) -> Any:
    return body


def share_crypto() -> None:
    """Parse each public key once and verify each signed message once per process, for all its sims."""
    import meshkit.mesh._node as node_module  # the names the node looks up, replaced for this process

    names = vars(node_module)
    parse = functools.lru_cache(maxsize=None)(names["public_key"])
    check = names["signed_by"]
    verified: dict[tuple[bytes, str, bytes], bool] = {}

    def signed_by(key: Any, message: dict[str, Any]) -> bool:
        unsigned = msgpack.packb({k: v for k, v in message.items() if k != "sig"}, use_bin_type=True)
        seen = (key.public_bytes_raw(), str(message.get("sig")), unsigned)
        outcome = verified.get(seen)
        if outcome is None:
            outcome = verified[seen] = check(key, message)
        return bool(outcome)

    names["public_key"], names["signed_by"] = parse, signed_by
    import meshkit.mesh._intake as intake_module  # where cards are checked

    if "signed_by" not in vars(intake_module):  # the check moved: sharing it here would share nothing
        raise RuntimeError("meshkit.mesh._intake no longer checks cards with signed_by")
    vars(intake_module)["signed_by"] = signed_by
    # a monitor sends the same frames to every app of a group: each app decodes them on its own CPU, here
    # once per process (the node only reads what it decodes)
    import meshkit.mesh._presence as presence_module

    decode = functools.lru_cache(maxsize=256)(json.loads)
    vars(presence_module)["json"] = types.SimpleNamespace(loads=decode, dumps=json.dumps)


class Sim:
    def __init__(self, index: int, app: int, shared: SharedKafka, properties: dict[str, str]) -> None:
        self.index = index
        self.shared = shared
        config = AppConfig.load(argv=[], environ={}, overrides=properties)
        functions = [make_spec(SHARED_ROUTE, _echo), make_spec(f"scale.app-{app}", _echo)]
        self.platform = Platform(config, name=f"scale-sim-{app}", functions=functions)
        self.node: MeshNode | None = None
        self.converged_at: float | None = None

    @property
    def origin(self) -> str:
        return self.platform.origin

    async def join(self) -> None:
        await self.platform.start()
        self.node = await join_mesh(self.platform, SimConnector(self.shared))

    def holds(self, peers: int) -> bool:
        """Its routing table holds `peers` peers, each with its routes."""
        node = self.node
        if node is None or len(node.table.peers) < peers or not node.presence.connected.is_set():
            return False
        return len(node.table.origins(SHARED_ROUTE)) >= peers

    def knows(self, origin: str) -> bool:
        return self.node is not None and origin in self.node.table.peers

    async def leave(self) -> None:
        """What `meshkit run` does on SIGINT: drain (nothing is in flight here), then stop."""
        await self.platform.drain()
        await self.platform.stop()


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _read_commands(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[dict[str, Any]]) -> None:
    for line in sys.stdin:
        if line.strip():
            loop.call_soon_threadsafe(queue.put_nowait, json.loads(line))
    loop.call_soon_threadsafe(queue.put_nowait, {"cmd": "stop"})


async def _until(condition: Callable[[], bool]) -> float:
    while not condition():  # noqa: ASYNC110  # a look at routing tables, which no event signals
        await asyncio.sleep(CHECK_EVERY)
    return time.monotonic()


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.apps, self.groups = args.apps, args.groups
        self.shared = SharedKafka(args.bootstrap)
        urls = args.monitors.split(",")
        self.sims = []
        for index in range(args.first, args.first + args.count):
            # half of the sims start with the first monitor, half with the second
            ordered = urls[index % len(urls) :] + urls[: index % len(urls)]
            properties = {
                "application.name": f"scale-sim-{index % args.names}",
                "presence.url": ",".join(ordered),
                "presence.wait": "120",
                "max.virtual.topics": str(args.topics),
                "connector.watchdog.exit.after": "0",
                "drain.quiet": "0.02",
                "presence.keepalive": str(args.keepalive),
                "closed.user.group": str(index % args.groups + 1),  # instance i in group i % G + 1
                "max.closed.user.groups": str(max(args.groups, 10)),
            }
            self.sims.append(Sim(index, index % args.names, self.shared, properties))
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        await self.shared.start()
        emit({"event": "ready", "origins": [sim.origin for sim in self.sims]})
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        threading.Thread(target=_read_commands, args=(loop, queue), daemon=True).start()
        while True:
            command = await queue.get()
            kind = command.get("cmd")
            if kind == "join":
                self._spawn(self._join())
            elif kind == "watch":
                self._spawn(self._watch(str(command["origin"])))
            elif kind == "leave":
                self._spawn(self._leave(str(command["origin"])))
            elif kind == "stop":
                break
        for task in self._tasks:
            task.cancel()
        await asyncio.wait_for(
            asyncio.gather(*(sim.platform.stop() for sim in self.sims), return_exceptions=True), 20
        )
        await self.shared.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _join(self) -> None:
        joins = [asyncio.ensure_future(sim.join()) for sim in self.sims]
        sizes = [len(range(g, self.apps, self.groups)) for g in range(self.groups)]  # instances per group
        waiting = list(self.sims)
        last_report = time.monotonic()
        while waiting:
            await asyncio.sleep(CHECK_EVERY)
            now = time.monotonic()
            for sim in waiting:
                if sim.holds(sizes[sim.index % self.groups] - 1):
                    sim.converged_at = now
            waiting = [sim for sim in waiting if sim.converged_at is None]
            if now - last_report > 5:
                last_report = now
                fewest = min((len(s.node.table.peers) if s.node else 0) for s in waiting) if waiting else 0
                log.warning("%d sims not converged yet, the fewest peers %d", len(waiting), fewest)
        for failed in [j for j in joins if j.done() and j.exception() is not None]:
            log.warning("a sim failed to join: %s", failed.exception())
        emit({"event": "converged", "at": max(sim.converged_at or 0.0 for sim in self.sims)})

    async def _watch(self, origin: str) -> None:
        others = [sim for sim in self.sims if sim.origin != origin]
        seen = await _until(lambda: not any(sim.knows(origin) for sim in others))
        emit({"event": "gone", "at": seen})

    async def _leave(self, origin: str) -> None:
        sim = next(sim for sim in self.sims if sim.origin == origin)
        started = time.monotonic()
        await sim.leave()
        emit({"event": "left", "at": started, "took": time.monotonic() - started})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_sim", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--monitors", required=True, help="comma list of presence URLs")
    parser.add_argument("--apps", type=int, required=True, help="apps in the whole mesh")
    parser.add_argument("--first", type=int, required=True, help="the index of this worker's first sim")
    parser.add_argument("--count", type=int, required=True, help="sims in this worker")
    parser.add_argument("--topics", type=int, required=True, help="max.virtual.topics")
    parser.add_argument("--groups", type=int, default=1, help="closed user groups (i %% groups + 1)")
    parser.add_argument("--names", type=int, default=50, help="apps the instances are of (i %% names)")
    parser.add_argument("--keepalive", type=float, default=2.0, help="presence.keepalive of each sim")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    for name in os.environ.get("BENCH_SCALE_DEBUG", "").split(","):  # e.g. meshkit.mesh.presence
        if name:
            logging.getLogger(name).setLevel(logging.INFO)
    share_crypto()
    run_async(Worker(args).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
