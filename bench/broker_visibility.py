"""The development broker (Tansu, memory storage) can hide records from a consumer at the log's end.

Not a meshkit figure: it explains the rare request timeouts of the soak. Two producers write to one
partition at once (as two instances replying to one caller do) while a consumer streams at the end. Every
record the broker acknowledged is then looked for: in what the streaming consumer got, and on a re-read
from offset 0. Records missing from the first and present in the second were skipped at the end of the
log: a batch became visible after a later one had already been fetched past. A real Kafka broker never
shows a consumer records beyond the high watermark, so this does not happen there.

    python -m bench.broker_visibility [--producers 2] [--records 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from meshkit.devbroker import DevBroker

TOPIC = "visibility"


def read_all(settings: dict[str, Any], seconds: float) -> set[bytes]:
    """Everything in partition 0, read from offset 0."""
    consumer = Consumer({**settings, "group.id": "re-read", "enable.auto.commit": False})
    consumer.assign([TopicPartition(TOPIC, 0, 0)])
    found: set[bytes] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = consumer.poll(0.1)
        if message is not None and message.error() is None and message.value() is not None:
            found.add(bytes(message.value() or b""))
    consumer.close()
    return found


def run(producers: int, records: int) -> dict[str, int]:
    with DevBroker() as broker:
        settings: dict[str, Any] = {"bootstrap.servers": broker.bootstrap}
        admin = AdminClient(settings)  # kept: its futures die with it
        created = admin.create_topics([NewTopic(TOPIC, 1, 1)])
        for future in created.values():
            future.result()
        streaming = Consumer({**settings, "group.id": "stream", "fetch.wait.max.ms": 2})
        streaming.assign([TopicPartition(TOPIC, 0, 0)])
        streamed: set[bytes] = set()
        acknowledged: set[bytes] = set()
        lock = threading.Lock()
        stop = threading.Event()

        def stream() -> None:
            while not stop.is_set():
                message = streaming.poll(0.05)
                if message is not None and message.error() is None and message.value() is not None:
                    streamed.add(bytes(message.value() or b""))

        def produce(number: int) -> None:
            producer = Producer({**settings, "linger.ms": 0})

            def acked(error: KafkaError | None, message: Message) -> None:
                if error is None:
                    with lock:
                        acknowledged.add(bytes(message.value() or b""))

            for n in range(records):
                producer.produce(TOPIC, f"{number}-{n}".encode(), partition=0, callback=acked)
                producer.poll(0)
                if n % 3 == 0:
                    time.sleep(0.0005)  # interleave the producers' batches
            producer.flush(30)

        reader = threading.Thread(target=stream)
        reader.start()
        writers = [threading.Thread(target=produce, args=(n,)) for n in range(producers)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join()
        deadline = time.monotonic() + 10
        while len(streamed) < len(acknowledged) and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        reader.join()
        streaming.close()
        stored = read_all(settings, 5.0)
    return {
        "producers": producers,
        "acknowledged": len(acknowledged),
        "missed_by_the_streaming_consumer": len(acknowledged - streamed),
        "missing_on_re_read": len(acknowledged - stored),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--records", type=int, default=2000, help="per producer")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.producers, args.records)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
