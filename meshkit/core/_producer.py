"""Running a streaming function: an async generator's items, or a writer's segments, to its caller.

The contract (markers, credit window, cancel): docs/protocol/streams.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from meshkit.core._envelope import EventEnvelope
from meshkit.core._functions import FunctionSpec
from meshkit.core._markers import (
    STREAM_CALLER_REQUIRED,
    X_STREAM_IDLE,
    X_STREAM_WINDOW,
    X_STREAM_WINDOW_BYTES,
)
from meshkit.core._outlet import DEFAULT_WINDOW_BYTES, Outlet, StreamCancelled, StreamStalled
from meshkit.core._writer import EventStreamWriter

log = logging.getLogger("meshkit.streams")

Failure = Callable[[EventEnvelope, BaseException], tuple[int, Any, str]]

MAX_WINDOW = 65_536
MAX_WINDOW_BYTES = 1 << 30
#: bytes of data a generator that never awaits sends before the producer lets the loop run: a pipeline
#: of full records (the transport sends what a loop turn queued, at its end, 64 KB to a record)
BURST_BYTES = 48 * 1024
DEFAULT_IDLE = 30.0  # seconds: a request with no idle allowance of its own (it cannot say one)


def stream_terms(event: EventEnvelope) -> tuple[int, int, float] | None:
    """The window (segments, bytes) and idle allowance a stream request asks for, taken off its headers;
    None: it is not one (a `request()` to a function that streams, or a drop-and-forget event)."""
    headers = event.headers
    window = headers.pop(X_STREAM_WINDOW, None)
    window_bytes = headers.pop(X_STREAM_WINDOW_BYTES, None)
    idle = headers.pop(X_STREAM_IDLE, None)
    if window is None or event.reply_to is None or event.cid is None:
        return None
    try:
        segments = max(1, min(MAX_WINDOW, int(window)))
    except ValueError:
        return None
    try:
        size = max(1, min(MAX_WINDOW_BYTES, int(window_bytes))) if window_bytes else DEFAULT_WINDOW_BYTES
    except ValueError:
        size = DEFAULT_WINDOW_BYTES
    try:
        seconds = max(0.001, int(idle) / 1000) if idle is not None else DEFAULT_IDLE
    except ValueError:
        seconds = DEFAULT_IDLE
    return segments, size, seconds


def refusal(route: str) -> str:
    return f"{STREAM_CALLER_REQUIRED}: {route} answers with a stream (PostOffice.stream reads it)"


async def run_stream(
    spec: FunctionSpec, arguments: tuple[Any, ...], outlet: Outlet, failure: Failure, event: EventEnvelope
) -> tuple[int, Any]:
    """Run the function to the end of its stream; (status, error text or None) for its stats and span."""
    writer = EventStreamWriter(outlet)
    generator: Any = None
    try:
        if spec.writer is not None:
            await spec.handler(*arguments, **{spec.writer: writer})
        else:
            generator = spec.handler(*arguments)
            burst = BURST_BYTES
            async for item in generator:
                if outlet.open:  # credit in hand: no coroutine for it (the path of every segment)
                    writer.put(item)
                    if outlet.bytes >= burst:  # let the loop run: what was sent leaves now, in one record
                        burst = outlet.bytes + BURST_BYTES
                        await asyncio.sleep(0)
                else:
                    await writer.write(item)
                    burst = outlet.bytes + BURST_BYTES
        await writer.close()
        return 200, None
    except (StreamCancelled, asyncio.CancelledError):
        if outlet.cancelled is None:  # the platform stops, not the caller
            writer.failed(503, f"Route {spec.route}: the app is stopping")
            raise
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            task.uncancel()  # our own cancel, done with: what follows in this task is not cancelled
        log.debug("%s stopped: %s", spec.route, outlet.cancelled)
        return 200, None
    except StreamStalled as exc:
        writer.failed(408, f"Route {spec.route}: {exc}", "Stalled")
        log.warning("%s stopped: %s", spec.route, exc)
        return 408, str(exc)
    except Exception as exc:
        status, message, kind = failure(event, exc)
        writer.failed(status, message if isinstance(message, str) else str(message), kind)
        return status, message
    finally:
        if generator is not None:
            try:
                await generator.aclose()  # its `finally` blocks run now, not at garbage collection
            except Exception:
                log.exception("%s failed while closing", spec.route)
