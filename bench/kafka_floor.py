"""The "kafka" floor of BENCH.md: request/reply over bare confluent-kafka, no framework.

Two processes on a fresh two-partition topic: the caller produces requests to partition 0 and consumes
replies from partition 1; the echo server does the reverse. Both use the connector's client settings
(`meshkit.connectors.kafka.producer_config` / `consumer_config`), so the floor pays what the connector
pays and nothing more. The caller matches replies to futures by an 8-byte correlation id.

The segments floor (`--segments`, "kafka floor, segments"): the same, but each request is the records
meshkit publishes for an event with that body (`mesh_record_sizes`: at 200 KB with the default
`segment.size`, three segments of 65,664 bytes and one of 8,457, instead of one record of 204,808), handed
to librdkafka in one `produce_batch` as the connector does, each echoed back (the server's replies to what
one fetch brought, in one `produce_batch`, as an app's replies of one loop turn go), and the request done
when all its records are back. It is what the broker and the client cost for meshkit's records, without
meshkit: beside the plain floor it shows what the broker charges for four records where the floor sends one.

    python bench/kafka_floor.py [--json] [--bootstrap HOST:PORT] [--payloads 200,10240,204800] [--segments]

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

from bench.common import Figure, median_of, run_async  # noqa: E402
from meshkit import EventEnvelope  # noqa: E402
from meshkit.connectors.kafka import admin_config, consumer_config, producer_config  # noqa: E402
from meshkit.core import encode_split  # noqa: E402
from meshkit.devbroker import DevBroker  # noqa: E402
from meshkit.mesh import DEFAULT_SEGMENT_SIZE  # noqa: E402
from meshkit.mesh._frames import segment_records  # noqa: E402  # what the transport publishes, measured

NAME = "kafka floor"
SEGMENTS_NAME = "kafka floor, segments"
# the segments floor again with this linger.ms: librdkafka then sends one produce_batch as one record batch
SEGMENTS_LINGER_MS = "0.1"
SEGMENTS_LOST_AFTER = 10.0  # seconds: a segmented request still unanswered is lost, and the run goes on
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


def _settings(bootstrap: str, linger_ms: str | None) -> dict[str, str]:
    settings = {"bootstrap.servers": bootstrap}
    if linger_ms is not None:
        settings["linger.ms"] = linger_ms
    return settings


def _produce_batch(producer: Producer, topic: str, partition: int, values: list[bytes]) -> None:
    """All of `values` to one partition in one produce_batch call (as the connector publishes a loop turn's
    records); those refused by a full local queue are retried, in order, once it drains."""
    while values:
        messages: list[dict[str, Any]] = [{"value": value} for value in values]
        producer.produce_batch(topic, messages, partition=partition)
        values = [m["value"] for m in messages if m.get("_error") is not None]
        if values:
            producer.poll(0.001)


def mesh_record_sizes(payload_bytes: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> list[int]:
    """The lengths of the records meshkit publishes for a request (or its echo) with a body of this size."""
    origin = "20260101" + "a" * 32
    event = EventEnvelope(
        "bench.echo",
        bytes(payload_bytes),
        reply_to="@" + origin,
        cid="5f2e9a01c3d42",
        sender="bench-caller",
        id="5f2e9a01c3d41",
    )
    pieces = encode_split(event)
    assert pieces is not None  # a bytes body
    if sum(len(piece) for piece in pieces) <= segment_size:
        return [payload_bytes + _CID_BYTES]  # one record: the plain floor's
    return [len(record) for record in segment_records(origin, pieces, segment_size, "multiplex.0001-000")]


def serve(bootstrap: str, topic: str, batch: bool = False, linger_ms: str | None = None) -> None:
    """The echo server: every record on partition 0 goes back unchanged to partition 1.

    `batch`: what one poll brought goes back in one produce_batch call (the segments floor)."""
    settings = _settings(bootstrap, linger_ms)
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
            messages = [first, *consumer.consume(num_messages=500, timeout=0)]
            if batch:
                values = [v for m in messages if m.error() is None and (v := m.value()) is not None]
                _produce_batch(producer, topic, REPLIES, values)
            else:
                for msg in messages:
                    value = msg.value()
                    if msg.error() is None and value is not None:
                        _produce(producer, topic, REPLIES, value)
            producer.poll(0)
    finally:
        consumer.close()
        producer.flush(2)


@contextmanager
def _echo_server(
    bootstrap: str, topic: str, batch: bool = False, linger_ms: str | None = None
) -> Iterator[None]:
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
        *(["--batch"] if batch else []),
        *(["--linger-ms", linger_ms] if linger_ms is not None else []),
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

    def __init__(self, bootstrap: str, topic: str, linger_ms: str | None = None) -> None:
        settings = _settings(bootstrap, linger_ms)
        self.topic = topic
        self._loop = asyncio.get_running_loop()
        self._producer = Producer(producer_config(settings))
        self._consumer = Consumer(consumer_config(settings))
        self._consumer.assign([TopicPartition(topic, REPLIES, 0)])
        self._futures: dict[int, asyncio.Future[bytes]] = {}
        self._left: dict[int, int] = {}  # records of a segmented request still to come back, beyond one
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
            cid = int.from_bytes(value[:_CID_BYTES], "big")
            left = self._left.pop(cid, 0)
            if left:
                if left > 1:
                    self._left[cid] = left - 1
                continue
            fut = self._futures.pop(cid, None)
            if fut is not None and not fut.done():
                fut.set_result(value)

    async def call(self, payload: bytes) -> bytes:
        self._next += 1
        cid = self._next
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._futures[cid] = fut
        _produce(self._producer, self.topic, REQUESTS, cid.to_bytes(_CID_BYTES, "big") + payload)
        return await fut

    async def call_records(self, records: list[bytes]) -> bytes:
        """One request as several records (each starts with the request's id, to be overwritten): done when
        all are back."""
        self._next += 1
        cid = self._next
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._futures[cid] = fut
        if len(records) > 1:
            self._left[cid] = len(records) - 1
        head = cid.to_bytes(_CID_BYTES, "big")
        values = [head + record[_CID_BYTES:] for record in records]
        _produce_batch(self._producer, self.topic, REQUESTS, values)
        return await fut

    async def close(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._join_and_close)

    def _join_and_close(self) -> None:
        for thread in self._threads:
            thread.join()
        self._consumer.close()
        self._producer.flush(2)


def _request(caller: Caller, records: list[bytes]) -> Any:
    """One request: the plain floor's one record, or (several records) the segments floor's."""
    return caller.call(records[0]) if len(records) == 1 else caller.call_records(records)


async def _answered(caller: Caller, records: list[bytes], timeout: float, lost: list[int]) -> bool:
    """One request within `timeout`; a segmented one not answered within SEGMENTS_LOST_AFTER is counted in
    lost[0] (one of its records hidden at the log's end, as bench.mesh counts its own) and False."""
    if len(records) == 1:
        await asyncio.wait_for(_request(caller, records), timeout)
        return True
    try:
        await asyncio.wait_for(_request(caller, records), SEGMENTS_LOST_AFTER)
    except TimeoutError:
        lost[0] += 1
        return False
    return True


async def _sequential(
    bootstrap: str,
    topic: str,
    records: list[bytes],
    warmup: int,
    calls: int,
    linger_ms: str | None,
    lost: list[int],
) -> list[float]:
    caller = Caller(bootstrap, topic, linger_ms)
    try:
        for _ in range(warmup):
            await _answered(caller, records, 30, lost)
        latencies = []
        for _ in range(calls):
            start = time.perf_counter()
            if await _answered(caller, records, 30, lost):
                latencies.append((time.perf_counter() - start) * 1000)
        return latencies
    finally:
        await caller.close()


async def _throughput(
    bootstrap: str,
    topic: str,
    records: list[bytes],
    warmup: int,
    calls: int,
    in_flight: int,
    linger_ms: str | None,
    lost: list[int],
) -> float:
    caller = Caller(bootstrap, topic, linger_ms)
    try:
        for _ in range(warmup):
            await _answered(caller, records, 30, lost)
        remaining = calls

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await _answered(caller, records, 60, lost)

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
    segment_size: int | None = None,
    linger_ms: str | None = None,
) -> dict[str, Any]:
    """Measure the Kafka floor for one payload size; returns one BENCH.md result row.

    `bootstrap` None starts a fresh Tansu broker for each phase; otherwise each phase gets a fresh topic.
    `segment_size`: the segments floor instead, each request being the records meshkit would publish with
    that segment.size (`mesh_record_sizes`), sent in one produce_batch and echoed in produce_batch calls.
    `linger_ms`: this linger.ms on both sides instead of the connector's default.
    """
    sizes = [] if segment_size is None else mesh_record_sizes(payload_bytes, segment_size)
    segmented = len(sizes) > 1
    lost = [0]  # segmented requests without an answer in time (the plain floor raises instead)
    if segmented:
        records = [os.urandom(size) for size in sizes]
    else:  # the caller puts the id in front: one record of payload + 8 bytes
        records = [os.urandom(payload_bytes)]
    with phase_broker(bootstrap) as servers:
        topic = _create_topic(servers)
        with _echo_server(servers, topic, segmented, linger_ms):
            latencies = run_async(_sequential(servers, topic, records, warmup, calls, linger_ms, lost))
    with phase_broker(bootstrap) as servers:
        topic = _create_topic(servers)
        with _echo_server(servers, topic, segmented, linger_ms):
            rps = run_async(
                _throughput(servers, topic, records, warmup, throughput_calls, in_flight, linger_ms, lost)
            )
    name = SEGMENTS_NAME if segmented else NAME
    return {
        "name": name if linger_ms is None else f"{name}, linger.ms={linger_ms}",
        "records": len(records) if segmented else 1,
        "lost": lost[0],
        "payload_bytes": payload_bytes,
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(statistics.quantiles(latencies, n=100)[98], 3),
        "rps_at_64": round(rps, 1),
        "floor": None,
        "p50_ratio": None,
        "rps_ratio": None,
    }


def floor_figure(
    bootstrap: str | None,
    payload_bytes: int,
    segment_size: int | None = None,
    linger_ms: str | None = None,
) -> Figure:
    """One run of the floor (or, with `segment_size`, of the segments floor) as a Figure."""
    row = run_kafka_floor(bootstrap, payload_bytes, segment_size=segment_size, linger_ms=linger_ms)
    figure = Figure(row["name"], payload_bytes, row["p50_ms"], row["p99_ms"], row["rps_at_64"])
    figure.lost = row["lost"] if segment_size is not None else None
    return figure


def segmented(payload_bytes: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> bool:
    """Whether meshkit sends an event with a body of this size in several records."""
    return len(mesh_record_sizes(payload_bytes, segment_size)) > 1


def segments_run(
    payloads: tuple[int, ...] = PAYLOADS, repeat: int = 3, bootstrap: str | None = None
) -> list[Figure]:
    """`python -m bench --only segments`: for each payload meshkit segments, `repeat` runs of the floor and
    of the segments floor, and of the segments floor with linger.ms=SEGMENTS_LINGER_MS, in turns; the
    medians, both segments floors against the floor."""
    figures: list[Figure] = []
    for size in payloads:
        if not segmented(size):
            continue
        floors, segments, lingering = [], [], []
        for _ in range(repeat):
            floors.append(floor_figure(bootstrap, size))
            segments.append(floor_figure(bootstrap, size, DEFAULT_SEGMENT_SIZE))
            lingering.append(floor_figure(bootstrap, size, DEFAULT_SEGMENT_SIZE, SEGMENTS_LINGER_MS))
        floor = median_of(floors)
        figures += [floor, median_of(segments).against(floor), median_of(lingering).against(floor)]
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--bootstrap", help="use this broker instead of fresh Tansu brokers")
    parser.add_argument("--payloads", default=",".join(map(str, PAYLOADS)), help="payload sizes in bytes")
    parser.add_argument(
        "--segments",
        action="store_true",
        help=f"also the segments floor: meshkit's records at segment.size {DEFAULT_SEGMENT_SIZE}",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--batch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--linger-ms", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.bootstrap, args.topic, args.batch, args.linger_ms)
        return 0
    if not args.json:
        print(f"{'name':<22}{'payload':>10}{'records':>8}{'p50 ms':>10}{'p99 ms':>10}{'req/s @64':>12}")
    for size in (int(s) for s in args.payloads.split(",")):
        kinds = [None, DEFAULT_SEGMENT_SIZE] if args.segments else [None]
        for segment_size in kinds:
            try:
                row = run_kafka_floor(args.bootstrap, size, segment_size=segment_size)
            except (KafkaException, RuntimeError, TimeoutError) as e:
                print(f"{NAME} failed for {size} B: {e}", file=sys.stderr)
                return 1
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                figures = f"{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}{row['rps_at_64']:>12.0f}"
                print(f"{row['name']:<22}{size:>10}{row['records']:>8}{figures}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
