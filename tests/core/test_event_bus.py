"""Functions on the in-memory event bus: declaring, running, bounding, failing."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from pydantic import BaseModel

from meshkit import AppError, EventEnvelope, FunctionRegistry, PostOffice
from meshkit.core import make_spec, validate_route_name
from meshkit.testing import running_platform


@pytest.mark.parametrize("name", ["hello.world", "v1.my-service_2.get", "a.b"])
def test_good_route_names(name: str) -> None:
    assert validate_route_name(name) == name


@pytest.mark.parametrize(
    "name", ["hello", "Hello.World", "hello world.x", ".a", "a.", "a..b", "", 5, "a.b/c"]
)
def test_bad_route_names_are_refused_at_declaration(name: Any) -> None:
    registry = FunctionRegistry()
    with pytest.raises(ValueError, match="Invalid route name"):
        registry.route(name)


def test_bad_instances_and_signatures_are_refused() -> None:
    async def handler(headers: dict[str, str], body: Any, instance: int) -> Any:
        return body

    with pytest.raises(ValueError, match="instances"):
        make_spec("a.b", handler, instances=0)

    async def too_many(a: Any, b: Any, c: Any, d: Any) -> None: ...

    with pytest.raises(TypeError, match="takes 4 positional parameters"):
        make_spec("a.b", too_many)


async def test_async_and_plain_def_handlers_both_answer() -> None:
    registry = FunctionRegistry()

    @registry.route("async.echo")
    async def async_echo(headers: dict[str, str], body: Any, instance: int) -> Any:
        return {"body": body, "instance": instance, "thread": threading.current_thread().name}

    @registry.route("sync.echo")
    def sync_echo(headers: dict[str, str], body: Any, instance: int) -> Any:
        return {"body": body, "instance": instance, "thread": threading.current_thread().name}

    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        async_reply = await po.request("async.echo", "hi")
        sync_reply = await po.request("sync.echo", "hi")
    assert async_reply.status == sync_reply.status == 200
    assert async_reply.body["body"] == sync_reply.body["body"] == "hi"
    assert async_reply.body["thread"] == "MainThread"
    assert sync_reply.body["thread"].startswith("meshkit-sync.echo")
    assert sync_reply.sender == "sync.echo" and sync_reply.exec_time is not None


async def test_a_plain_def_handler_never_blocks_the_event_loop() -> None:
    registry = FunctionRegistry()

    @registry.route("slow.sync")
    def slow(body: Any) -> str:
        time.sleep(0.3)
        return "done"

    async with running_platform(registry) as platform:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        reply = await PostOffice(platform).request("slow.sync")
        task.cancel()
    assert reply.body == "done"
    assert ticks >= 10  # the loop kept running while the handler slept in its thread


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_instances_is_a_hard_bound_on_concurrency(kind: str) -> None:
    registry = FunctionRegistry()
    running = peak = 0
    lock = threading.Lock()

    def enter() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)

    def leave() -> None:
        nonlocal running
        with lock:
            running -= 1

    if kind == "async":

        @registry.route("bounded.fn", instances=3)
        async def bounded_async(headers: dict[str, str], body: Any, instance: int) -> int:
            enter()
            await asyncio.sleep(0.02)
            leave()
            return instance
    else:

        @registry.route("bounded.fn", instances=3)
        def bounded_sync(headers: dict[str, str], body: Any, instance: int) -> int:
            enter()
            time.sleep(0.02)
            leave()
            return instance

    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        replies = await asyncio.gather(*(po.request("bounded.fn", n) for n in range(30)))
    assert peak == 3
    assert {r.body for r in replies} == {1, 2, 3}


async def test_events_to_one_instance_run_in_arrival_order() -> None:
    registry = FunctionRegistry()
    seen: list[int] = []

    @registry.route("ordered.fn", instances=1)
    async def ordered(body: int) -> None:
        await asyncio.sleep(0)
        seen.append(body)

    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        for n in range(50):
            await po.send("ordered.fn", n)
        await po.request("ordered.fn", 50)
    assert seen == list(range(51))


class Order(BaseModel):
    item: str
    quantity: int


async def test_a_pydantic_body_is_validated_and_a_returned_model_serialised() -> None:
    registry = FunctionRegistry()

    @registry.route("order.double")
    async def double(headers: dict[str, str], order: Order, instance: int) -> Order:
        assert isinstance(order, Order)
        return Order(item=order.item, quantity=order.quantity * 2)

    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        good = await po.request("order.double", {"item": "tea", "quantity": 2})
        from_model = await po.request("order.double", Order(item="tea", quantity=5))
        bad = await po.request("order.double", {"item": "tea", "quantity": "many"})
    assert good.status == 200 and good.body == {"item": "tea", "quantity": 4}
    assert from_model.body == {"item": "tea", "quantity": 10}
    assert bad.status == 400
    assert "Invalid Order: quantity" in bad.body


async def test_exceptions_become_error_replies() -> None:
    registry = FunctionRegistry()

    @registry.route("fails.app")
    async def app_error(body: Any) -> None:
        raise AppError(409, "Already booked")

    @registry.route("fails.bug")
    def bug(body: Any) -> None:
        raise ZeroDivisionError("division by zero")

    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        conflict = await po.request("fails.app")
        crash = await po.request("fails.bug")
        after = await po.request("fails.app")
    assert (conflict.status, conflict.body, conflict.is_error) == (409, "Already booked", True)
    assert (crash.status, crash.body, crash.exception) == (500, "division by zero", "ZeroDivisionError")
    assert after.status == 409  # the function keeps serving after a failure


async def test_a_handler_may_return_an_envelope_for_full_control() -> None:
    registry = FunctionRegistry()

    @registry.route("full.control")
    async def full(body: Any) -> EventEnvelope:
        return EventEnvelope(body={"created": body}, headers={"location": "/x/1"}, status=201)

    async with running_platform(registry) as platform:
        reply = await PostOffice(platform).request("full.control", 1)
    assert (reply.status, reply.body, reply.headers) == (201, {"created": 1}, {"location": "/x/1"})


async def test_handlers_see_read_only_route_and_trace_headers() -> None:
    registry = FunctionRegistry()

    @registry.route("show.headers")
    async def show(headers: dict[str, str], body: Any, instance: int) -> dict[str, str]:
        headers["my_route"] = "tampered"  # a handler's copy: the caller's event is untouched
        return dict(headers)

    @registry.route("show.headers.nested")
    async def nested(headers: dict[str, str], body: Any, instance: int) -> Any:
        return (await PostOffice().request("show.headers")).body

    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        plain = await po.request("show.headers", headers={"x": "1"})
        traced_po = PostOffice(platform, trace_id="t-1", trace_path="GET /api/x")
        traced = await traced_po.request("show.headers")
        propagated = await traced_po.request("show.headers.nested")
    assert plain.body == {"x": "1", "my_route": "tampered"}
    assert "my_trace_id" not in plain.body
    assert traced.body["my_trace_id"] == "t-1" and traced.body["my_trace_path"] == "GET /api/x"
    assert traced.trace_id == "t-1"
    # a PostOffice created inside a traced function carries the trace to the next hop
    assert propagated.body["my_trace_id"] == "t-1" and propagated.body["my_route"] == "tampered"


async def test_private_functions_are_callable_in_process_only() -> None:
    registry = FunctionRegistry()

    @registry.route("secret.fn", private=True)
    async def secret(body: Any) -> str:
        return "inside"

    async with running_platform(registry) as platform:
        assert (await PostOffice(platform).request("secret.fn")).body == "inside"
        with pytest.raises(AppError) as refused:
            await platform.call(EventEnvelope("secret.fn"), 1.0, external=True)
        assert refused.value.status == 403
        with pytest.raises(AppError) as refused_send:
            platform.dispatch(EventEnvelope("secret.fn"), external=True)
        assert refused_send.value.status == 403
        assert "secret.fn" not in platform.public_routes()


async def test_functions_can_be_registered_and_released_at_run_time() -> None:
    async with running_platform() as platform:
        po = PostOffice(platform)
        assert not po.exists("dynamic.fn")

        async def dynamic(body: Any) -> str:
            return f"dynamic {body}"

        platform.register("dynamic.fn", dynamic, instances=2)
        assert po.exists("dynamic.fn")
        assert (await po.request("dynamic.fn", 1)).body == "dynamic 1"
        with pytest.raises(ValueError, match="already registered"):
            platform.register("dynamic.fn", dynamic)
        await platform.release("dynamic.fn")
        assert not po.exists("dynamic.fn")
        with pytest.raises(AppError) as gone:
            await po.request("dynamic.fn", 2)
        assert gone.value.status == 404
        with pytest.raises(AppError):
            await platform.release("dynamic.fn")


async def test_two_declarations_of_one_route_are_refused_at_start() -> None:
    registry = FunctionRegistry()

    @registry.route("twice.declared")
    async def first(body: Any) -> None: ...

    @registry.route("twice.declared")
    async def second(body: Any) -> None: ...

    with pytest.raises(ValueError, match="declared by both"):
        async with running_platform(registry):
            pass


async def test_past_its_queue_bound_a_function_refuses_at_once_with_503() -> None:
    registry = FunctionRegistry()
    gate = asyncio.Event()

    @registry.route("bounded.queue", instances=1, max_queue=2)
    async def blocked(body: int) -> int:
        await gate.wait()
        return body

    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        running = [asyncio.create_task(po.request("bounded.queue", n)) for n in range(3)]  # 1 runs, 2 wait
        await asyncio.sleep(0)
        with pytest.raises(AppError) as busy:
            await po.request("bounded.queue", 3)
        assert busy.value.status == 503 and "busy" in busy.value.message
        with pytest.raises(AppError):
            await po.send("bounded.queue", 4)
        gate.set()
        assert [r.body for r in await asyncio.gather(*running)] == [0, 1, 2]
        assert platform.pool("bounded.queue").refused == 2  # type: ignore[union-attr]
        assert (await po.request("bounded.queue", 5)).body == 5  # room again once the queue drains


async def test_the_default_queue_bound_comes_from_configuration() -> None:
    registry = FunctionRegistry()

    @registry.route("default.bound")
    async def slow(body: Any) -> None:
        await asyncio.sleep(10)

    async with running_platform(registry, properties={"max.queue": "1"}) as platform:
        po = PostOffice(platform)
        await po.send("default.bound", 1)  # runs
        await po.send("default.bound", 2)  # waits
        with pytest.raises(AppError) as busy:
            await po.send("default.bound", 3)
        assert busy.value.status == 503


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


async def test_memory_stays_flat_under_a_sustained_overload() -> None:
    """200,000 events at a function that cannot keep up: the queue bound turns the excess into 503s."""
    registry = FunctionRegistry()
    gate = asyncio.Event()

    @registry.route("overloaded.fn", instances=2, max_queue=100)
    async def slow(body: bytes) -> None:
        await gate.wait()

    async with running_platform(registry) as platform:
        po = PostOffice(platform)
        refused = 0

        async def flood(count: int) -> None:
            nonlocal refused
            for _ in range(count):
                try:
                    await po.send("overloaded.fn", b"x" * 1024)
                except AppError as exc:
                    assert exc.status == 503
                    refused += 1

        await flood(20_000)  # warm up: allocator pools, the queue at its bound
        before = _rss_mb()
        await flood(200_000)
        grown = _rss_mb() - before
        pool = platform.pool("overloaded.fn")
        assert pool is not None and pool.queue_depth == 100
        gate.set()
    assert refused == 220_000 - 102
    assert grown < 20, f"RSS grew {grown:.1f} MB under overload"  # unbounded: 200,000 KB-sized events
