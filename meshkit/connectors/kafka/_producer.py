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

    async def publish(self, topic: str, partition: int, payload: bytes) -> None:
        if self._closed:
            raise ConnectorError("kafka connector is closed")
        fut: asyncio.Future[None] = self._loop.create_future()
        callback = functools.partial(self._on_delivery, fut)
        while True:
            try:
                self._producer.produce(topic, payload, partition=partition, on_delivery=callback)
                break
            except BufferError:
                # Local queue full: the poll thread drains it as the broker acknowledges; retry shortly.
                await asyncio.sleep(_QUEUE_FULL_BACKOFF)
                if self._closed:
                    raise ConnectorError("kafka connector is closed") from None
            except KafkaException as e:
                raise ConnectorError(f"publish to {topic}[{partition}] refused: {e.args[0].str()}") from e
        self._pending.add(fut)
        await fut

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
