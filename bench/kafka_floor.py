"""The "kafka" floor of BENCH.md: request/reply over bare confluent-kafka, no framework.

Two processes on a fresh two-partition topic: the caller produces requests to partition 0 and consumes
replies from partition 1; the echo server does the reverse. Both use the connector's client settings
(`meshkit.connectors.kafka.producer_config` / `consumer_config`), so the floor pays what the connector
pays and nothing more. The caller matches replies to futures by an 8-byte correlation id.

    python bench/kafka_floor.py [--json] [--bootstrap HOST:PORT] [--payloads 200,10240,204800]

Without --bootstrap every measured phase gets a fresh Tansu broker (its memory log slows as it grows).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    # Run as a script from anywhere: meshkit lives next to bench/.
    sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402
from confluent_kafka.cimpl import NewTopic  # noqa: E402

from bench.common import run_async  # noqa: E402
from meshkit.connectors.kafka import admin_config, consumer_config, producer_config  # noqa: E402
from meshkit.devbroker import DevBroker  # noqa: E402

NAME = "kafka floor"
PAYLOADS = (200, 10_240, 204_800)
REQUESTS, REPLIES = 0, 1
_CID_BYTES = 8


def _produce(producer: Producer, topic: str, partition: int, value: bytes) -> None:
    while True:
        try:
            producer.produce(topic, value, partition=partition)
            return
        except BufferError:
            # Local queue full: serve delivery reports so it drains, then retry.
            producer.poll(0.001)


def serve(bootstrap: str, topic: str) -> None:
    """The echo server: every record on partition 0 goes back unchanged to partition 1."""
    settings = {"bootstrap.servers": bootstrap}
    producer = Producer(producer_config(settings))
    consumer = Consumer(consumer_config(settings))
    # A fresh topic: offset 0 is the end, and it sidesteps Tansu's inexact end offset.
    consumer.assign([TopicPartition(topic, REQUESTS, 0)])
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    print("ready", flush=True)
    try:
        while not stopping.is_set():
            first = consumer.poll(0.1)
            if first is None:
                producer.poll(0)
                continue
            for msg in [first, *consumer.consume(num_messages=500, timeout=0)]:
                value = msg.value()
                if msg.error() is None and value is not None:
                    _produce(producer, topic, REPLIES, value)
            producer.poll(0)
    finally:
        consumer.close()
        producer.flush(2)


@contextmanager
def _echo_server(bootstrap: str, topic: str) -> Iterator[None]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    # -m, not the file's path: a script's own folder comes first on sys.path, and bench/ must not shadow
    cmd = [
        sys.executable,
        "-m",
        "bench.kafka_floor",
        "--serve",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"echo server failed to start (exit code {proc.wait()})")
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _create_topic(bootstrap: str) -> str:
    topic = f"bench.kafka-floor.{uuid.uuid4().hex[:12]}"
    admin = AdminClient(admin_config({"bootstrap.servers": bootstrap}))
    admin.create_topics([NewTopic(topic, 2, -1)])[topic].result(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=topic, timeout=5)
        if topic in md.topics and len(md.topics[topic].partitions) == 2:
            return topic
        time.sleep(0.05)
    raise RuntimeError(f"topic {topic} did not appear")


class Caller:
    """The requesting side: produce, then await the reply whose correlation id matches."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        settings = {"bootstrap.servers": bootstrap}
        self.topic = topic
        self._loop = asyncio.get_running_loop()
        self._producer = Producer(producer_config(settings))
        self._consumer = Consumer(consumer_config(settings))
        self._consumer.assign([TopicPartition(topic, REPLIES, 0)])
        self._futures: dict[int, asyncio.Future[bytes]] = {}
        self._next = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._serve_deliveries, name="floor-producer", daemon=True),
            threading.Thread(target=self._read_replies, name="floor-consumer", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _serve_deliveries(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def _read_replies(self) -> None:
        while not self._stop.is_set():
            first = self._consumer.poll(0.1)
            if first is None:
                continue
            batch = [first, *self._consumer.consume(num_messages=500, timeout=0)]
            values = [v for m in batch if m.error() is None and (v := m.value()) is not None]
            if values:
                # One hop to the loop per batch, as the connector does.
                self._loop.call_soon_threadsafe(self._resolve, values)

    def _resolve(self, values: list[bytes]) -> None:
        for value in values:
            fut = self._futures.pop(int.from_bytes(value[:_CID_BYTES], "big"), None)
            if fut is not None and not fut.done():
                fut.set_result(value)

    async def call(self, payload: bytes) -> bytes:
        self._next += 1
        cid = self._next
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._futures[cid] = fut
        _produce(self._producer, self.topic, REQUESTS, cid.to_bytes(_CID_BYTES, "big") + payload)
        return await fut

    async def close(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._join_and_close)

    def _join_and_close(self) -> None:
        for thread in self._threads:
            thread.join()
        self._consumer.close()
        self._producer.flush(2)


async def _sequential(bootstrap: str, topic: str, payload: bytes, warmup: int, calls: int) -> list[float]:
    caller = Caller(bootstrap, topic)
    try:
        for _ in range(warmup):
            await asyncio.wait_for(caller.call(payload), 30)
        latencies = []
        for _ in range(calls):
            start = time.perf_counter()
            await asyncio.wait_for(caller.call(payload), 30)
            latencies.append((time.perf_counter() - start) * 1000)
        return latencies
    finally:
        await caller.close()


async def _throughput(
    bootstrap: str, topic: str, payload: bytes, warmup: int, calls: int, in_flight: int
) -> float:
    caller = Caller(bootstrap, topic)
    try:
        for _ in range(warmup):
            await asyncio.wait_for(caller.call(payload), 30)
        remaining = calls

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await asyncio.wait_for(caller.call(payload), 60)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return calls / (time.perf_counter() - start)
    finally:
        await caller.close()


@contextmanager
def phase_broker(bootstrap: str | None) -> Iterator[str]:
    """The broker of one measured phase: `bootstrap` as given, or a fresh Tansu when None."""
    if bootstrap is not None:
        yield bootstrap
        return
    with DevBroker() as broker:
        yield broker.bootstrap


def run_kafka_floor(
    bootstrap: str | None,
    payload_bytes: int,
    *,
    warmup: int = 200,
    calls: int = 2_000,
    throughput_calls: int = 5_000,
    in_flight: int = 64,
) -> dict[str, Any]:
    """Measure the Kafka floor for one payload size; returns one BENCH.md result row.

    `bootstrap` None starts a fresh Tansu broker for each phase; otherwise each phase gets a fresh topic.
    """
    payload = os.urandom(payload_bytes)
    with phase_broker(bootstrap) as servers:
        topic = _create_topic(servers)
        with _echo_server(servers, topic):
            latencies = run_async(_sequential(servers, topic, payload, warmup, calls))
    with phase_broker(bootstrap) as servers:
        topic = _create_topic(servers)
        with _echo_server(servers, topic):
            rps = run_async(_throughput(servers, topic, payload, warmup, throughput_calls, in_flight))
    return {
        "name": NAME,
        "payload_bytes": payload_bytes,
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(statistics.quantiles(latencies, n=100)[98], 3),
        "rps_at_64": round(rps, 1),
        "floor": None,
        "p50_ratio": None,
        "rps_ratio": None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--bootstrap", help="use this broker instead of fresh Tansu brokers")
    parser.add_argument("--payloads", default=",".join(map(str, PAYLOADS)), help="payload sizes in bytes")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.bootstrap, args.topic)
        return 0
    if not args.json:
        print(f"{'name':<14}{'payload':>10}{'p50 ms':>10}{'p99 ms':>10}{'req/s @64':>12}")
    for size in (int(s) for s in args.payloads.split(",")):
        try:
            row = run_kafka_floor(args.bootstrap, size)
        except (KafkaException, RuntimeError, TimeoutError) as e:
            print(f"kafka floor failed for {size} B: {e}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(
                f"{row['name']:<14}{size:>10}{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}{row['rps_at_64']:>12.0f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
