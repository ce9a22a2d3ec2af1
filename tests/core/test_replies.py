"""PendingReplies: the requests awaiting replies, their deadlines (one sweeping timer) and targets."""

from __future__ import annotations

import asyncio
import time

import pytest

from meshkit import AppError, EventEnvelope
from meshkit.core._replies import PendingReplies


async def test_a_reply_resolves_its_request_and_an_unknown_one_is_not_taken() -> None:
    replies = PendingReplies()
    future = replies.expect(asyncio.get_running_loop(), "c1", "a.b", 5)
    assert replies.waiting("c1") and replies.within_deadline("c1")
    assert not replies.resolve(EventEnvelope("inbox", cid="other"))
    assert not replies.resolve(EventEnvelope("inbox"))  # no cid
    assert replies.resolve(EventEnvelope("inbox", "ok", cid="c1"))
    assert (await future).body == "ok"
    assert not replies.waiting("c1") and replies.within_deadline("c1")  # until the caller is done with it
    replies.done("c1")
    assert not replies.within_deadline("c1") and not replies.deadlines
    replies.stop("bye")


async def test_each_deadline_fails_its_request_alone_and_on_time() -> None:
    replies = PendingReplies()
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    short = replies.expect(loop, "short", "r.short", 0.05)
    late = replies.expect(loop, "late", "r.late", 0.2)
    kept = replies.expect(loop, "kept", "r.kept", 5)
    with pytest.raises(TimeoutError, match=r"Route r\.short timeout for 0\.05 s"):
        await short
    assert not late.done() and 0.04 < time.monotonic() - started < 0.15
    with pytest.raises(TimeoutError, match=r"r\.late"):
        await late
    assert 0.18 < time.monotonic() - started < 0.35
    assert not kept.done() and list(replies.deadlines) == ["kept"]
    replies.stop("the platform stops")
    with pytest.raises(AppError, match="the platform stops"):
        await kept


async def test_a_request_sent_again_waits_on_a_new_future_within_its_first_deadline() -> None:
    replies = PendingReplies()
    loop = asyncio.get_running_loop()
    first = replies.expect(loop, "c", "a.b", 0.1)
    replies.targets["c"] = "origin-1"
    assert replies.sent_to("origin-1") == ["c"] and replies.sent_elsewhere(["c", "x"]) == ["c"]
    assert replies.resolve(EventEnvelope("inbox", status=503, cid="c"))
    assert (await first).status == 503
    second = replies.again("c")
    replies.targets["c"] = "origin-2"
    assert replies.sent_to("origin-1") == [] and replies.sent_to("origin-2") == ["c"]
    with pytest.raises(TimeoutError):  # the deadline it was given at first still holds
        await second
    replies.stop("done")


async def test_a_local_reply_future_times_out_alone_and_fails_at_stop() -> None:
    replies = PendingReplies()
    loop = asyncio.get_running_loop()
    short: asyncio.Future[EventEnvelope] = loop.create_future()
    kept: asyncio.Future[EventEnvelope] = loop.create_future()
    replies.expect_local(loop, short, "r.here", 0.05)
    replies.expect_local(loop, kept, "r.kept", 5)
    remote = replies.expect(loop, "c", "r.remote", 5)
    with pytest.raises(TimeoutError, match=r"Route r\.here timeout for 0\.05 s"):
        await short
    assert list(replies.local) == [kept] and not kept.done() and not remote.done()
    replies.stop("stopping")
    for future in (kept, remote):
        with pytest.raises(AppError, match="stopping"):
            await future
    assert not replies.local and not replies.futures
