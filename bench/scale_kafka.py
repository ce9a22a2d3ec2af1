"""The Kafka clients the simulated apps of one process share (bench/scale_sim.py).

A real app has its own producer and one consumer per partition it reads; hundreds of them in one process
would measure librdkafka's threads, not meshkit. Here one `KafkaConnector` publishes for every sim of the
process, and one confluent Consumer reads every partition any of them consumes: each sim's own virtual
topic, and its group's partition of `service.monitor` once for all of them (each record of it is handed
to every sim that consumes it, as each app would read it). `SimConnector` is one sim's view: the
`Connector` protocol, so the sim's MeshNode is meshkit's own, unchanged.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition

from meshkit.connectors import ConnectorError, Latency, RecordHandler
from meshkit.connectors.kafka import KafkaConnector, consumer_config

_POLL_SECONDS = 0.02  # also how soon a new assignment is taken up by the consumer's thread
_BATCH = 2000
# one fetch covers every assigned partition: asking every 2 ms for hundreds of them keeps the broker busy
# answering empty fetches, and a control plane is measured here, whose records are not latency-bound
FETCH_WAIT_MS = "10"

Key = tuple[str, int]


class SharedConsumer:
    """One consumer thread for many partitions; records are handed to the loop in batches."""

    def __init__(self, settings: dict[str, str], loop: asyncio.AbstractEventLoop) -> None:
        conf = consumer_config({**settings, "fetch.wait.max.ms": FETCH_WAIT_MS})
        self._consumer = Consumer(conf)
        self._loop = loop
        self._handlers: dict[Key, list[RecordHandler]] = defaultdict(list)
        self._assigned: set[Key] = set()
        self._pending: list[tuple[Key, bool, asyncio.Future[None]]] = []  # (partition, fresh, positioned)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.records = 0
        self._thread = threading.Thread(target=self._run, name="scale-consumer", daemon=True)
        self._thread.start()

    async def add(self, topic: str, partition: int, handler: RecordHandler, *, fresh: bool) -> None:
        """Hand `handler` every record of the partition from now on.

        `fresh`: the partition is a virtual topic of this run's fresh broker, read from its start (it holds
        only records for its one holder, and a watermark query per sim would serialise a join storm)."""
        key = (topic, partition)
        self._handlers[key].append(handler)
        if key in self._assigned:
            return
        self._assigned.add(key)
        positioned: asyncio.Future[None] = self._loop.create_future()
        with self._lock:
            self._pending.append((key, fresh, positioned))
        await positioned

    def remove(self, topic: str, partition: int, handler: RecordHandler) -> None:
        handlers = self._handlers.get((topic, partition), [])
        if handler in handlers:
            handlers.remove(handler)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _assign(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        partitions = []
        for (topic, partition), fresh, _ in pending:
            offset = 0
            if not fresh:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), 5.0)
                offset = high
            partitions.append(TopicPartition(topic, partition, offset))
        self._consumer.incremental_assign(partitions)
        for _, _, positioned in pending:
            self._loop.call_soon_threadsafe(_resolve, positioned)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._assign()
                messages = self._consumer.consume(num_messages=_BATCH, timeout=_POLL_SECONDS)
                batch: list[tuple[Key, bytes]] = [
                    ((str(m.topic()), int(m.partition() or 0)), bytes(m.value() or b""))
                    for m in messages
                    if m.error() is None and m.value() is not None
                ]
                if batch:
                    self.records += len(batch)
                    self._loop.call_soon_threadsafe(self._deliver, batch)
        except RuntimeError:  # the loop closed under us: nobody reads any more
            pass
        finally:
            self._consumer.close()

    def _deliver(self, batch: list[tuple[Key, bytes]]) -> None:
        for key, value in batch:
            for handler in list(self._handlers.get(key, ())):
                handler(value)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class SharedKafka:
    """The producer, admin client and consumer of one process of sims."""

    def __init__(self, bootstrap: str) -> None:
        self.settings = {"bootstrap.servers": bootstrap}
        self.connector = KafkaConnector(self.settings)
        self.consumer: SharedConsumer | None = None
        self._topics: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        await self.connector.start()
        self.consumer = SharedConsumer(self.settings, asyncio.get_running_loop())

    async def ensure_topic(self, topic: str, partitions: int) -> None:
        """Once per topic per process: sims of one physical topic share the answer."""
        known = self._topics.get(topic)
        if known is None:
            known = self._topics[topic] = asyncio.ensure_future(
                self.connector.ensure_topic(topic, partitions)
            )
        await asyncio.shield(known)

    async def close(self) -> None:
        if self.consumer is not None:
            await asyncio.to_thread(self.consumer.close)
        await self.connector.close()


class _Subscription:
    def __init__(self, release: Callable[[], None]) -> None:
        self._release = release

    async def close(self) -> None:
        self._release()


class SimConnector:
    """One sim's Connector: publishing and topics through the process's clients, its partitions read by
    the shared consumer."""

    name = "kafka"

    def __init__(self, shared: SharedKafka) -> None:
        self.shared = shared
        self.href = shared.connector.href
        self._subscriptions: list[_Subscription] = []

    async def start(self) -> None:
        return None

    async def ensure_topic(self, topic: str, partitions: int) -> None:
        await self.shared.ensure_topic(topic, partitions)

    async def list_topics(self) -> dict[str, int]:
        return await self.shared.connector.list_topics()

    def publish(self, topic: str, partition: int, payload: bytes) -> asyncio.Future[None]:
        return self.shared.connector.publish(topic, partition, payload)

    async def consume(
        self, topic: str, partition: int, on_record: RecordHandler, *, latency: Latency = "low"
    ) -> _Subscription:
        consumer = self.shared.consumer
        if consumer is None:
            raise ConnectorError("the shared consumer is not started")
        await consumer.add(topic, partition, on_record, fresh=topic.startswith("multiplex."))
        subscription = _Subscription(lambda: consumer.remove(topic, partition, on_record))
        self._subscriptions.append(subscription)
        return subscription

    async def close(self) -> None:
        for subscription in self._subscriptions:
            await subscription.close()
        self._subscriptions.clear()
