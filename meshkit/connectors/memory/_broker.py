"""The in-process broker behind `cloud.connector=none`: topics of numbered partitions, no retention."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field

from meshkit.connectors._base import ConnectorError, RecordHandler

log = logging.getLogger(__name__)

# Same ceiling as the Kafka connector's producer, so code tested in memory behaves the same on Kafka.
DEFAULT_MAX_RECORD_BYTES = 4 * 1024 * 1024


@dataclass(eq=False)
class MemorySubscriber:
    """One consumer of one partition, bound to the event loop that subscribed."""

    loop: asyncio.AbstractEventLoop
    on_record: RecordHandler
    closed: bool = False

    def deliver(self, payload: bytes) -> None:
        # Runs on the subscriber's loop; a record queued before close() must not arrive after it.
        if self.closed:
            return
        try:
            self.on_record(payload)
        except Exception:
            log.exception("record handler failed")


@dataclass(eq=False)
class _Partition:
    subscribers: list[MemorySubscriber] = field(default_factory=list)


class MemoryBroker:
    """Topics -> partitions -> subscriber callbacks, shared by every MemoryConnector attached to it."""

    _default: MemoryBroker | None = None
    _default_lock = threading.Lock()

    def __init__(self, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        self.max_record_bytes = max_record_bytes
        self._topics: dict[str, list[_Partition]] = {}
        # Connectors on different threads' loops may share one broker.
        self._lock = threading.Lock()

    @classmethod
    def default(cls) -> MemoryBroker:
        """The process-wide broker used by `MemoryConnector()` without an explicit broker."""
        with cls._default_lock:
            if cls._default is None:
                cls._default = cls()
            return cls._default

    def ensure_topic(self, topic: str, partitions: int) -> None:
        if not topic:
            raise ConnectorError("topic name must not be empty")
        if partitions < 1:
            raise ConnectorError(f"topic {topic} needs at least one partition, not {partitions}")
        with self._lock:
            existing = self._topics.get(topic)
            if existing is None:
                self._topics[topic] = [_Partition() for _ in range(partitions)]
            elif len(existing) < partitions:
                # An existing topic is left as it is, as the Kafka connector does.
                log.warning("topic %s exists with %d partitions, not %d", topic, len(existing), partitions)

    def topics(self) -> dict[str, int]:
        with self._lock:
            return {name: len(parts) for name, parts in self._topics.items()}

    def _partition(self, topic: str, partition: int) -> _Partition:
        parts = self._topics.get(topic)
        if parts is None:
            raise ConnectorError(f"topic {topic} does not exist")
        if not 0 <= partition < len(parts):
            raise ConnectorError(
                f"partition {partition} out of range: topic {topic} has {len(parts)} partitions"
            )
        return parts[partition]

    def publish(self, topic: str, partition: int, payload: bytes) -> None:
        if len(payload) > self.max_record_bytes:
            raise ConnectorError(
                f"record of {len(payload)} bytes exceeds the maximum of {self.max_record_bytes} bytes"
            )
        with self._lock:
            subscribers = list(self._partition(topic, partition).subscribers)
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for sub in subscribers:
            # call_soon keeps per-partition order and never runs the handler inside the publisher.
            if sub.loop is current:
                sub.loop.call_soon(sub.deliver, payload)
            elif not sub.loop.is_closed():
                sub.loop.call_soon_threadsafe(sub.deliver, payload)

    def subscribe(self, topic: str, partition: int, subscriber: MemorySubscriber) -> None:
        with self._lock:
            self._partition(topic, partition).subscribers.append(subscriber)

    def unsubscribe(self, topic: str, partition: int, subscriber: MemorySubscriber) -> None:
        subscriber.closed = True
        with self._lock:
            parts = self._topics.get(topic)
            if parts is not None and 0 <= partition < len(parts):
                subs = parts[partition].subscribers
                if subscriber in subs:
                    subs.remove(subscriber)
