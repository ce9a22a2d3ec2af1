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
        self._outbox: list[tuple[str, int, bytes, asyncio.Future[None]]] = []
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
        # Everything published in one loop iteration is produced back to back, so librdkafka puts it in
        # one request: one record per request costs the broker a batch each (Tansu slows as batches grow).
        self._flush_scheduled = False
        outbox, self._outbox = self._outbox, []
        for index, (topic, partition, payload, fut) in enumerate(outbox):
            if fut.done():
                continue
            try:
                self._producer.produce(
                    topic, payload, partition=partition, on_delivery=functools.partial(self._on_delivery, fut)
                )
            except BufferError:
                # Local queue full: the poll thread drains it as the broker acknowledges; retry shortly.
                self._outbox[:0] = outbox[index:]
                self._flush_scheduled = True
                self._loop.call_later(_QUEUE_FULL_BACKOFF, self._flush)
                return
            except KafkaException as e:
                self._pending.discard(fut)
                fut.set_exception(
                    ConnectorError(f"publish to {topic}[{partition}] refused: {e.args[0].str()}")
                )

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
