"""What an execution answers (meshkit.core._outcome): results, failures and expiries as replies."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

import pytest
from pydantic import BaseModel, ValidationError

from meshkit import AppError, EventEnvelope
from meshkit.core._outcome import expired_reply, failure_of, make_reply
from meshkit.core._stats import RouteStats


class Order(BaseModel):
    item: str
    count: int


def _request(deadline: float | None = None, **fields: str) -> EventEnvelope:
    event = EventEnvelope("shop.order", {"item": "tea"}, reply_to="@inbox", cid="c1", **fields)  # type: ignore[arg-type]
    event.deadline = deadline  # not a constructor argument: the bus sets it (docs/protocol/envelope.md)
    return event


def test_a_result_becomes_a_reply_to_its_caller_with_its_run_time_observed() -> None:
    stats = RouteStats()
    reply = make_reply(
        "shop.order", stats, _request(), time.perf_counter(), 200, Order(item="tea", count=2), None
    )
    assert reply is not None
    assert (reply.to, reply.cid, reply.status, reply.sender) == ("@inbox", "c1", 200, "shop.order")
    assert reply.body == {"item": "tea", "count": 2}  # a model travels as plain data
    assert reply.exec_time is not None and reply.exec_time >= 0
    assert stats.count == 1


def test_a_returned_envelope_gives_the_reply_its_status_headers_and_body() -> None:
    result = EventEnvelope(body="made", status=201, headers={"k": "v"})
    reply = make_reply("shop.order", RouteStats(), _request(), time.perf_counter(), 200, result, None)
    assert reply is not None and (reply.status, reply.headers, reply.body) == (201, {"k": "v"}, "made")


def test_a_result_that_cannot_be_serialized_is_a_500_codec_error() -> None:
    reply = make_reply("shop.order", RouteStats(), _request(), time.perf_counter(), 200, object(), None)
    assert reply is not None and (reply.status, reply.exception) == (500, "CodecError")
    assert "Unable to serialize the result" in reply.body


def test_a_traced_request_gets_its_trace_back() -> None:
    event = _request(trace_id="t1", trace_path="GET /x")
    reply = make_reply("shop.order", RouteStats(), event, time.perf_counter(), 200, dt.date(2026, 1, 2), None)
    assert reply is not None and (reply.trace_id, reply.trace_path) == ("t1", "GET /x")
    assert reply.body == "2026-01-02"


def test_a_drop_and_forget_event_gets_no_reply_and_its_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    event = EventEnvelope("shop.order", {})
    with caplog.at_level(logging.WARNING, logger="meshkit.worker"):
        assert (
            make_reply("shop.order", RouteStats(), event, time.perf_counter(), 500, "boom", "ValueError")
            is None
        )
    assert "returned 500 for drop-and-forget event" in caplog.text


def test_failures_map_to_their_status_and_a_cancellation_is_raised_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    event = _request()
    assert failure_of("shop.order", None, event, AppError(409, "taken")) == (409, "taken", "AppError")
    with caplog.at_level(logging.WARNING, logger="meshkit.worker"):
        assert failure_of("shop.order", None, event, KeyError("k")) == (500, "'k'", "KeyError")
        assert failure_of("shop.order", None, event, RuntimeError()) == (500, "RuntimeError", "RuntimeError")
    assert "shop.order failed on event" in caplog.text
    with pytest.raises(asyncio.CancelledError):
        failure_of("shop.order", None, event, asyncio.CancelledError())


def test_a_body_its_model_refuses_is_a_400_naming_each_field() -> None:
    with pytest.raises(ValidationError) as refused:
        Order.model_validate({"count": "many"})
    status, message, exception = failure_of("shop.order", Order, _request(), refused.value)
    assert (status, exception) == (400, "ValidationError")
    assert message.startswith("Invalid Order: ") and "item: Field required" in message and "count:" in message


def test_an_expired_event_is_a_408_naming_how_late_it_was_and_none_without_a_reply_address() -> None:
    now = time.perf_counter()
    reply = expired_reply("shop.order", _request(deadline=now - 0.25), now - 1.0)
    assert reply is not None and (reply.status, reply.exception, reply.cid) == (408, "Expired", "c1")
    late = int(reply.body.split("passed ")[1].split(" ms")[0])
    assert 250 <= late < 5000
    forget = EventEnvelope("shop.order")
    forget.deadline = now - 1
    assert expired_reply("shop.order", forget, now - 2) is None
