"""hazelcast.future.Future -> asyncio.Future, without blocking the event loop.

The client completes its futures on its reactor thread (or at once, in the calling thread, when the result is
already there); the outcome crosses to the loop with `call_soon_threadsafe`, never through a blocking wait.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

from hazelcast.future import Future as HzFuture

log = logging.getLogger(__name__)

T = TypeVar("T")


def _transfer(source: HzFuture[Any], target: asyncio.Future[Any]) -> None:
    # On the loop; the source is done, so reading it never waits.
    if target.done():  # cancelled by a timeout meanwhile
        return
    error = source.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())


def bridge(source: HzFuture[T], loop: asyncio.AbstractEventLoop) -> asyncio.Future[T]:
    """An asyncio future on `loop` that completes as `source` does."""
    target: asyncio.Future[T] = loop.create_future()

    def done(finished: HzFuture[T]) -> None:
        try:
            loop.call_soon_threadsafe(_transfer, finished, target)
        except RuntimeError:  # the loop is closed: nobody waits any more
            log.debug("Hazelcast result dropped: event loop closed")

    source.add_done_callback(done)
    return target
