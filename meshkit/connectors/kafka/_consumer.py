"""One assigned partition: a dedicated thread polls a confluent Consumer and hands records to the loop."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from meshkit.connectors._base import ConnectorError, RecordHandler

log = logging.getLogger(__name__)

# Idle poll timeout: a record wakes poll() at once, so this only bounds how long close() waits.
_POLL_SECONDS = 0.1
# Records drained per hop to the event loop once poll() has returned the first one.
_BATCH = 500
# Bounds for positioning: watermark query, then reading the partition's last batch.
_WATERMARK_SECONDS = 5.0
_PROBE_SECONDS = 3.0


def _resolve(fut: asyncio.Future[None], error: BaseException | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


class KafkaSubscription:
    """Consumes one partition from its end; `close()` stops delivery, then closes the consumer."""

    def __init__(
        self,
        conf: dict[str, Any],
        topic: str,
        partition: int,
        on_record: RecordHandler,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self._conf = conf
        self._on_record = on_record
        self._loop = loop
        self._stop = threading.Event()
        self._closed = False
        self._ready: asyncio.Future[None] = loop.create_future()
        self._finished: asyncio.Future[None] = loop.create_future()
        self._on_close: list[Callable[[KafkaSubscription], None]] = []
        self._thread = threading.Thread(
            target=self._run, name=f"meshkit-kafka-consumer-{topic}[{partition}]", daemon=True
        )

    async def start(self, timeout: float) -> None:
        """Returns once the consumer is positioned at the partition's end."""
        self._thread.start()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._ready)
        except TimeoutError:
            await self.close()
            raise ConnectorError(
                f"cannot consume {self.topic}[{self.partition}]: not positioned within {timeout} s"
            ) from None
        except ConnectorError:
            await self.close()
            raise

    def _signal(self, fut: asyncio.Future[None], error: BaseException | None = None) -> None:
        try:
            self._loop.call_soon_threadsafe(_resolve, fut, error)
        except RuntimeError:
            # The loop is closed: nobody waits for this any more.
            self._stop.set()

    def _position(self, consumer: Consumer) -> None:
        tp = TopicPartition(self.topic, self.partition)
        low, high = consumer.get_watermark_offsets(tp, timeout=_WATERMARK_SECONDS)
        if high <= low:
            # Empty partition: the concrete end offset, so nothing published from now on is missed.
            consumer.assign([TopicPartition(self.topic, self.partition, high)])
            return
        # Tansu reports the end as the last batch's base offset + 1, so a record of that batch would be
        # delivered again: read the last batch (whole, in one fetch) and drop it, then we are at the end.
        consumer.assign([TopicPartition(self.topic, self.partition, high - 1)])
        deadline = time.monotonic() + _PROBE_SECONDS
        while time.monotonic() < deadline and not self._stop.is_set():
            msg = consumer.poll(_POLL_SECONDS)
            if msg is None:
                continue
            if msg.error() is not None:
                log.warning("kafka consumer %s[%d]: %s", self.topic, self.partition, msg.error())
                continue
            consumer.consume(num_messages=100_000, timeout=0)
            return
        # Nothing readable at the end (e.g. transaction markers): the reported end is the best we have.
        consumer.assign([TopicPartition(self.topic, self.partition, high)])

    def _run(self) -> None:
        consumer: Consumer | None = None
        try:
            try:
                consumer = Consumer(self._conf)
                self._position(consumer)
            except KafkaException as e:
                error = e.args[0].str() if e.args else str(e)
                self._signal(
                    self._ready, ConnectorError(f"cannot consume {self.topic}[{self.partition}]: {error}")
                )
                return
            self._signal(self._ready)
            self._poll_loop(consumer)
        except Exception as e:
            log.exception("kafka consumer %s[%d] failed", self.topic, self.partition)
            self._signal(self._ready, ConnectorError(f"cannot consume {self.topic}[{self.partition}]: {e}"))
        finally:
            if consumer is not None:
                try:
                    consumer.close()
                except Exception:
                    log.exception("closing kafka consumer %s[%d] failed", self.topic, self.partition)
            self._signal(self._finished)

    def _poll_loop(self, consumer: Consumer) -> None:
        while not self._stop.is_set():
            try:
                first = consumer.poll(_POLL_SECONDS)
                if first is None:
                    continue
                # poll() returns on the first record; drain what is queued without waiting (batched hop).
                messages = [first, *consumer.consume(num_messages=_BATCH, timeout=0)]
            except Exception:
                log.exception("kafka consumer %s[%d] poll failed", self.topic, self.partition)
                time.sleep(_POLL_SECONDS)
                continue
            values: list[bytes] = []
            for msg in messages:
                error = msg.error()
                if error is not None:
                    log.warning("kafka consumer %s[%d]: %s", self.topic, self.partition, error)
                    continue
                value = msg.value()
                if value is not None:
                    values.append(value)
            if values:
                try:
                    self._loop.call_soon_threadsafe(self._deliver, values)
                except RuntimeError:
                    return

    def _deliver(self, values: list[bytes]) -> None:
        # On the loop; a batch already queued when close() ran is dropped.
        for value in values:
            if self._closed:
                return
            try:
                self._on_record(value)
            except Exception:
                log.exception("record handler for %s[%d] failed", self.topic, self.partition)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for callback in self._on_close:
            callback(self)
        if self._thread.ident is not None:
            await asyncio.shield(self._finished)
            # It has signalled from its last statement: joining is immediate.
            self._thread.join()
        if self._ready.done() and not self._ready.cancelled():
            # Consume a late positioning error so the loop does not report it as never retrieved.
            self._ready.exception()
