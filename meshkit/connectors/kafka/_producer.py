"""One shared Producer: publishes pipeline, a background thread serves delivery reports in batches."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from meshkit.connectors._base import ConnectorError

log = logging.getLogger(__name__)

_Outcome = tuple["asyncio.Future[None]", "str | None"]
_Entry = tuple[str, int, bytes, "asyncio.Future[None]"]  # topic, partition, value, acknowledged

# How long the poll thread sleeps when idle; bounds how long close() waits for it.
_POLL_SECONDS = 0.1
# Wait between retries when librdkafka's local queue is full.
_QUEUE_FULL_BACKOFF = 0.002


def _settle(outcomes: list[_Outcome], pending: set[asyncio.Future[None]]) -> None:
    # Runs on the event loop: resolve a whole poll's worth of delivery reports in one hop.
    for fut, error in outcomes:
        pending.discard(fut)
        if fut.done():
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(ConnectorError(error))


class KafkaPublisher:
    """Wraps a confluent Producer; `publish` awaits the broker's acknowledgement without blocking the loop."""

    def __init__(
        self,
        conf: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
        extra_poll: Callable[[float], object] | None = None,
    ) -> None:
        self._producer = Producer(conf)
        self._loop = loop
        # Filled only by the thread currently serving callbacks (the poll thread, then close()'s flush).
        self._outcomes: list[_Outcome] = []
        self._pending: set[asyncio.Future[None]] = set()
        self._outbox: list[_Entry] = []
        self._flush_scheduled = False
        self._extra_poll = extra_poll
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="meshkit-kafka-producer", daemon=True)
        self._thread.start()

    def _on_delivery(self, fut: asyncio.Future[None], err: KafkaError | None, msg: Any) -> None:
        if err is None:
            self._outcomes.append((fut, None))
        else:
            where = f"{msg.topic()}[{msg.partition()}]" if msg is not None else "?"
            self._outcomes.append((fut, f"publish to {where} failed: {err.str()}"))

    def _hand_over(self) -> None:
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, []
        try:
            self._loop.call_soon_threadsafe(_settle, batch, self._pending)
        except RuntimeError:
            # The loop is gone: nobody is waiting any more.
            self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                served = self._producer.poll(_POLL_SECONDS)
                self._hand_over()
                if not served and self._extra_poll is not None:
                    self._extra_poll(0)
            except Exception:
                log.exception("kafka producer poll failed")

    def publish(self, topic: str, partition: int, payload: bytes) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self._loop.create_future()
        if self._closed:
            fut.set_exception(ConnectorError("kafka connector is closed"))
            return fut
        self._outbox.append((topic, partition, payload, fut))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        self._pending.add(fut)
        return fut

    def _flush(self) -> None:
        # What one loop iteration published goes to librdkafka in one call per partition (produce_batch),
        # so it leaves in one request and is fetched in one go: the segments of a large event arrive together.
        self._flush_scheduled = False
        outbox, self._outbox = self._outbox, []
        by_partition: dict[tuple[str, int], list[_Entry]] = {}
        for entry in outbox:
            if not entry[3].done():
                by_partition.setdefault((entry[0], entry[1]), []).append(entry)
        retry: list[_Entry] = []
        for (topic, partition), entries in by_partition.items():
            if retry:  # the queue is full: keep the rest, in order, for the retry
                retry += entries
                continue
            retry = self._produce(topic, partition, entries)
        if retry:
            self._outbox[:0] = retry
            self._flush_scheduled = True
            self._loop.call_later(_QUEUE_FULL_BACKOFF, self._flush)

    def _produce(self, topic: str, partition: int, entries: list[_Entry]) -> list[_Entry]:
        """Queue the entries of one partition; returns those to retry because librdkafka's queue is full."""
        # confluent-kafka 2.16 ignores a per-message "partition" in produce_batch: only the argument counts
        messages = [
            {"value": entry[2], "callback": functools.partial(self._on_delivery, entry[3])}
            for entry in entries
        ]
        try:
            self._producer.produce_batch(topic, messages, partition=partition)
        except BufferError:
            return entries
        except KafkaException as e:
            for entry in entries:
                self._fail(entry, f"publish to {topic}[{entry[1]}] refused: {e.args[0].str()}")
            return []
        retry: list[_Entry] = []
        for message, entry in zip(messages, entries, strict=True):
            error = message.get("_error")
            if error is None:
                continue
            if retry or getattr(error, "code", lambda: None)() == KafkaError._QUEUE_FULL:
                retry.append(entry)  # after a full queue everything waits, so order holds
            else:
                self._fail(entry, f"publish to {topic}[{entry[1]}] refused: {error}")
        return retry

    def _fail(self, entry: _Entry, message: str) -> None:
        fut = entry[3]
        self._pending.discard(fut)
        if not fut.done():
            fut.set_exception(ConnectorError(message))

    async def close(self, flush_seconds: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        done: asyncio.Future[None] = self._loop.create_future()

        def finish() -> None:
            # Off the loop: wait for the poll thread, then flush so queued records still go out.
            try:
                self._thread.join()
                left = self._producer.flush(flush_seconds)
                if left:
                    log.warning("%d kafka records not delivered at close", left)
            finally:
                self._loop.call_soon_threadsafe(_set_done, done)

        closer = threading.Thread(target=finish, name="meshkit-kafka-producer-close", daemon=True)
        closer.start()
        await done
        # Already past its last statement: joining cannot block the loop for long.
        closer.join()
        _settle(self._outcomes, self._pending)
        self._outcomes = []
        for fut in list(self._pending):
            if not fut.done():
                fut.set_exception(ConnectorError("kafka connector closed before the record was acknowledged"))
        self._pending.clear()


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
