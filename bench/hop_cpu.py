"""CPU per mesh hop, in one process: what the transport does to send an event and to take it in again.

    python -m bench.hop_cpu [--payloads 200,10240,204800] [--hops 2000] [--kafka]

One hop is `EventTransport.send_event` on one side (encode, segment, hand to the connector) and
`EventTransport._on_record` for each record on the other (parse, reassemble, decode), with a stub connector
that keeps the records and a stub platform that takes the event. Times are `time.process_time` (CPU of this
process, every thread), so other work on a shared machine disturbs them far less than wall-clock figures.

`--kafka` adds the client's share: each record also goes through a confluent Producer (its copy into
librdkafka; the producer points at a closed port, so nothing leaves) and is read back as a Python value.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from typing import Any

from meshkit import EventEnvelope
from meshkit.mesh import TopicLayout, VirtualTopic
from meshkit.mesh._transport import EventTransport  # measured alone: the transport, not the node

ORIGIN = "20260101" + "a" * 32


class _Platform:
    """What the transport asks of a platform on these paths."""

    origin = ORIGIN
    inbox = "@" + ORIGIN

    def __init__(self) -> None:
        self.last: EventEnvelope | None = None

    def resolve_reply(self, event: EventEnvelope) -> None:
        self.last = event

    def dispatch(self, event: EventEnvelope, external: bool = False) -> None:
        self.last = event


class _Connector:
    """Keeps published records; optionally copies each one into librdkafka, as the Kafka connector does."""

    def __init__(self, loop: asyncio.AbstractEventLoop, kafka: bool) -> None:
        self.loop = loop
        self.records: list[bytes] = []
        self.producer: Any = None
        if kafka:
            from confluent_kafka import Producer

            self.producer = Producer(
                {"bootstrap.servers": "127.0.0.1:9", "queue.buffering.max.kbytes": 2_000_000}
            )

    def publish(self, topic: str, partition: int, payload: bytes) -> asyncio.Future[None]:
        if self.producer is not None:
            self.producer.produce_batch(topic, [{"value": payload}], partition=partition)
        self.records.append(payload)
        fut: asyncio.Future[None] = self.loop.create_future()
        fut.set_result(None)
        return fut


def _transport(platform: _Platform, connector: _Connector) -> EventTransport:
    layout = TopicLayout()
    transport = EventTransport(
        platform,  # type: ignore[arg-type]  # a stub with what these paths use
        connector,  # type: ignore[arg-type]
        segment_size=64 * 1024,
        max_event_bytes=4 * 1024 * 1024,
        on_control=lambda message: None,
        layout=layout,
    )
    transport.topic = VirtualTopic("multiplex.0001", 1)
    return transport


def hop_cpu(payload_bytes: int, hops: int, kafka: bool) -> tuple[float, float, float]:
    """CPU microseconds per hop: (send side, receive side, total)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_hops(loop, payload_bytes, hops, kafka))
    finally:
        loop.close()


async def _hops(
    loop: asyncio.AbstractEventLoop, payload_bytes: int, hops: int, kafka: bool
) -> tuple[float, float, float]:
    """The hops, on the loop: send_event publishes at the end of the loop turn, here flushed at once."""
    platform = _Platform()
    connector = _Connector(loop, kafka)
    transport = _transport(platform, connector)
    target = VirtualTopic("multiplex.0001", 2)
    body = os.urandom(payload_bytes)
    reply_to = platform.inbox
    sending = receiving = 0.0
    clock = time.process_time
    gc.collect()
    for n in range(hops + hops // 10):  # the first tenth warms up
        event = EventEnvelope(platform.inbox, body, {"k": "v"}, reply_to=reply_to, cid=str(n))
        started = clock()
        transport.send_event(target, ORIGIN, event)
        transport._flush()  # what the end of the loop turn does
        middle = clock()
        records, connector.records = connector.records, []
        if kafka:
            # what the consumer hands over is a fresh bytes object per record, as msg.value() is
            records = [bytes(bytearray(r)) for r in records]
            connector.producer.purge()
            connector.producer.poll(0)  # frees the purged messages
        middle2 = clock()
        for record in records:
            transport.receive(record)
        ended = clock()
        if n >= hops // 10:
            sending += middle - started
            receiving += ended - middle2
        assert platform.last is not None and platform.last.body == body
        transport._sending.clear()
    return sending / hops * 1e6, receiving / hops * 1e6, (sending + receiving) / hops * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hop_cpu", description=__doc__)
    parser.add_argument("--payloads", default="200,10240,204800")
    parser.add_argument("--hops", type=int, default=2000)
    parser.add_argument("--kafka", action="store_true", help="include the Producer's copy")
    args = parser.parse_args(argv)
    print(f"{'payload':>8} {'send us':>9} {'receive us':>11} {'hop us':>9}")
    for size in (int(p) for p in args.payloads.split(",")):
        send, receive, total = hop_cpu(size, args.hops, args.kafka)
        print(f"{size:>8} {send:>9.1f} {receive:>11.1f} {total:>9.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
