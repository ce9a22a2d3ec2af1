"""How the development broker (Tansu, memory storage) slows as one partition's log grows.

Not a meshkit figure: it shows why long runs (the 100,000-request soak) stall on Tansu. One fresh broker,
one topic of two partitions, a consumer streaming at the end of each. Partition 0 is filled with
single-record batches, step by step; after each step the produce -> consume latency of one record is
sampled on both. Partition 1 stays empty: the slowdown belongs to the partition whose log grew.

    python -m bench.broker_growth [--steps 1000,2000,3000,4000,4500,5000,5500,6000] [--give-up 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from meshkit.devbroker import DevBroker

TOPIC = "growth"


def drain(consumer: Consumer) -> None:
    while consumer.poll(0) is not None:
        pass


def round_trip_ms(
    producer: Producer, consumer: Consumer, partition: int, samples: int, give_up: float
) -> float | None:
    """Median ms from producing one record to its arrival at the streaming consumer; None past give_up."""
    drain(consumer)
    taken = []
    for n in range(samples):
        marker = f"marker-{time.monotonic_ns()}-{n}".encode()
        started = time.perf_counter()
        producer.produce(TOPIC, marker, partition=partition)
        producer.flush(give_up)
        while True:
            message = consumer.poll(0.05)
            if message is not None and not message.error() and message.value() == marker:
                break
            if time.perf_counter() - started > give_up:
                return None
        taken.append((time.perf_counter() - started) * 1000)
    return statistics.median(taken)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", default="1000,2000,3000,4000,4500,5000,5500,6000")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--give-up", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    with DevBroker() as broker:
        settings: dict[str, str | int | float | bool] = {"bootstrap.servers": broker.bootstrap}
        admin = AdminClient(settings)  # kept: its futures die with it
        created = admin.create_topics([NewTopic(TOPIC, 2, 1)])
        for future in created.values():
            future.result()
        producer = Producer({**settings, "linger.ms": 0})
        consumers = []
        for partition in (0, 1):
            consumer = Consumer({**settings, "group.id": "growth", "fetch.wait.max.ms": 2})
            consumer.assign([TopicPartition(TOPIC, partition, 0)])
            consumers.append(consumer)
        batches = 0
        try:
            for step in (int(s) for s in args.steps.split(",")):
                while batches < step:  # one record per batch: flushed one by one
                    producer.produce(TOPIC, b"y" * 200, partition=0)
                    producer.flush(args.give_up)
                    batches += 1
                    if batches % 100 == 0:
                        drain(consumers[0])
                batches += args.samples  # the samples land in partition 0 too
                p0 = round_trip_ms(producer, consumers[0], 0, args.samples, args.give_up)
                p1 = round_trip_ms(producer, consumers[1], 1, args.samples, args.give_up)
                rows.append({"batches_in_partition_0": batches, "partition_0_ms": p0, "partition_1_ms": p1})
                if not args.json:
                    shown = [
                        f"stalled (> {args.give_up:g} s)" if ms is None else f"{ms:.2f} ms" for ms in (p0, p1)
                    ]
                    print(f"{batches:>6} batches: partition 0 {shown[0]}, partition 1 {shown[1]}", flush=True)
                if p0 is None:
                    break
        finally:
            for consumer in consumers:
                consumer.close()
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
