"""The mesh while it moves, in one process (meshkit.testing.TestMesh: the mesh's own code over the memory
connector): safe retries with failover, the retry budget, drain, outlier ejection, deadlines across apps.

The same behaviours against a real broker and real processes (SIGTERM, SIGKILL, SIGSTOP) are in
tests/mesh/test_mesh_in_motion.py.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from meshkit import AppError, FunctionRegistry, Platform, PostOffice, current_platform
from meshkit.testing import TestMesh


def service(
    route: str,
    *,
    idempotent: bool,
    seconds: float = 0.0,
    ran: list[str] | None = None,
    instances: int = 4,
    max_queue: int | None = None,
    fail: int | None = None,
) -> FunctionRegistry:
    """`route`: sleeps `seconds`, notes each run in `ran` (its app's name), answers the app's origin."""
    registry = FunctionRegistry()

    @registry.route(route, idempotent=idempotent, instances=instances, max_queue=max_queue)
    async def work(headers: dict[str, str], body: Any) -> Any:
        if ran is not None:
            ran.append(f"{current_platform().name}:{body}")
        if fail is not None:
            raise AppError(fail, "failing on purpose")
        await asyncio.sleep(float(headers.get("seconds", seconds)))
        return current_platform().origin

    return registry


async def two_instances(mesh: TestMesh, **kwargs: Any) -> tuple[Platform, Platform, Platform]:
    caller = await mesh.app("caller", FunctionRegistry())
    a = await mesh.app("svc-a", service("svc.work", **kwargs))
    b = await mesh.app("svc-b", service("svc.work", **kwargs))
    await mesh.until(lambda: len(PostOffice(caller).search("svc.work")) == 2, "both instances at the caller")
    return caller, a, b


async def busy_one(*apps: Platform) -> Platform:
    """The app running svc.work now."""
    for _ in range(1000):
        for app in apps:
            pool = app.pool("svc.work")
            if pool is not None and pool.busy:
                return app
        await asyncio.sleep(0.001)
    raise AssertionError("no instance took the request")


async def test_a_route_declared_safe_to_retry_says_so_in_every_routing_table() -> None:
    async with TestMesh() as mesh:
        caller, a, _ = await two_instances(mesh, idempotent=True)
        node = mesh.node(caller)
        assert node.table.retryable("svc.work")
        _, peers = node.router.describe()
        assert peers[a.origin]["idempotent"] == ["svc.work"]
        assert peers[a.origin]["draining"] is False and peers[a.origin]["ejected"] is False


async def test_a_safe_request_whose_instance_dies_before_replying_is_answered_by_the_other() -> None:
    ran: list[str] = []
    async with TestMesh() as mesh:
        caller, a, b = await two_instances(mesh, idempotent=True, seconds=0.3, ran=ran)
        request = asyncio.create_task(PostOffice(caller).request("svc.work", 1, timeout=5))
        victim = await busy_one(a, b)
        survivor = b if victim is a else a
        await mesh.stop(victim, drain=False)  # as SIGKILL: it never replies
        reply = await request
        assert (reply.status, reply.body) == (200, survivor.origin)
        assert sorted(ran) == sorted([f"{victim.name}:1", f"{survivor.name}:1"])
        assert caller.retries == 1


async def test_a_request_not_declared_safe_fails_fast_and_never_runs_twice() -> None:
    ran: list[str] = []
    async with TestMesh() as mesh:
        caller, a, b = await two_instances(mesh, idempotent=False, seconds=0.3, ran=ran)
        started = time.monotonic()
        request = asyncio.create_task(PostOffice(caller).request("svc.work", 1, timeout=5))
        victim = await busy_one(a, b)
        await mesh.stop(victim, drain=False)
        reply = await request
        assert reply.status == 503 and reply.exception == "PeerLost", reply
        assert "left before replying" in reply.body
        assert time.monotonic() - started < 1.0  # fast: not at the 5 s timeout
        assert ran == [f"{victim.name}:1"] and caller.retries == 0


async def test_the_caller_may_say_per_call_whether_a_request_is_safe_to_retry() -> None:
    async with TestMesh() as mesh:
        for declared, asked, retried in ((False, True, True), (True, False, False)):
            caller, a, b = await two_instances(mesh, idempotent=declared, seconds=0.3)
            request = asyncio.create_task(
                PostOffice(caller).request("svc.work", 1, timeout=5, idempotent=asked)
            )
            await mesh.stop(await busy_one(a, b), drain=False)
            reply = await request
            assert (reply.status == 200) is retried, reply
            for app in (caller, a, b):
                if app.running:
                    await mesh.stop(app)


async def test_a_refusal_for_overload_is_sent_to_another_instance_when_safe() -> None:
    async with TestMesh() as mesh:
        caller = await mesh.app("caller", FunctionRegistry())
        # one instance and no queue: a second request while it works is refused with 503
        small = await mesh.app(
            "svc-small", service("svc.work", idempotent=True, seconds=0.1, instances=1, max_queue=0)
        )
        large = await mesh.app("svc-large", service("svc.work", idempotent=True, seconds=0.1, instances=50))
        await mesh.until(lambda: len(PostOffice(caller).search("svc.work")) == 2, "both instances")
        replies = await asyncio.gather(
            *(PostOffice(caller).request("svc.work", n, timeout=5) for n in range(20))
        )
        assert Counter(r.status for r in replies) == {200: 20}
        by = Counter(r.body for r in replies)
        assert by[small.origin] >= 1 and by[large.origin] >= 10, by
        assert caller.retries >= 5  # the ones the small instance refused


async def test_with_every_instance_failing_retries_stay_within_the_budget() -> None:
    ran: list[str] = []
    properties = {"retry.budget.ratio": "0.2", "retry.budget.floor": "5", "retry.backoff": "0.001"}
    async with TestMesh(properties) as mesh:
        caller = await mesh.app("caller", FunctionRegistry())
        for name in ("svc-a", "svc-b"):
            await mesh.app(name, service("svc.work", idempotent=True, ran=ran, fail=503))
        await mesh.until(lambda: len(PostOffice(caller).search("svc.work")) == 2, "both instances")
        requests = 100
        for n in range(requests):
            reply = await PostOffice(caller).request("svc.work", n, timeout=5)
            assert reply.status == 503
        budget = 0.2 * requests + 5
        assert caller.retries <= budget, (caller.retries, budget)
        assert caller.retries >= budget - 1  # it did retry while the budget allowed
        assert caller.retry_budget.refused > 0
        assert len(ran) == requests + caller.retries
        # no request ran more often than its first attempt and retry.attempts (2) retries
        assert max(Counter(entry.split(":")[1] for entry in ran).values()) <= 3


async def test_a_draining_instance_gets_no_new_requests_and_finishes_what_it_has() -> None:
    async with TestMesh({"drain.quiet": "0.2"}) as mesh:
        caller, a, b = await two_instances(mesh, idempotent=False, seconds=0.3)
        first = asyncio.create_task(PostOffice(caller).request("svc.work", 1, timeout=5))
        draining = await busy_one(a, b)
        other = b if draining is a else a
        drain = asyncio.create_task(draining.drain())
        await mesh.until(lambda: draining.origin in mesh.node(caller).table.draining, "the drain notice")
        assert draining.draining
        during = await asyncio.gather(
            *(
                PostOffice(caller).request("svc.work", n, timeout=5, headers={"seconds": "0"})
                for n in range(20)
            )
        )
        assert {r.body for r in during} == {other.origin}  # none to the draining one
        assert (await first).body == draining.origin  # what it had, it finished
        await drain
        await mesh.stop(draining)
        assert caller.retries == 0


async def test_a_hung_instance_is_ejected_and_safe_requests_go_to_the_other() -> None:
    properties = {"outlier.stall": "0.2", "outlier.ejection": "5"}
    async with TestMesh(properties) as mesh:
        caller, a, b = await two_instances(mesh, idempotent=True)
        for n in range(10):  # the caller learns the route's usual latency
            await PostOffice(caller).request("svc.work", n, timeout=5)
        hang = asyncio.Event()

        async def hung(headers: dict[str, str], body: Any) -> Any:
            await hang.wait()  # as SIGSTOP: no answer
            return "too late"

        a.replace("svc.work", hung)
        replies: list[Any] = []

        async def client() -> None:  # four callers, one request after another each
            for n in range(10):
                replies.append(await PostOffice(caller).request("svc.work", n, timeout=5))

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(4)))
        elapsed = time.monotonic() - started
        assert Counter(r.status for r in replies) == {200: 40}
        assert caller.retries <= 4  # only the few caught on a before it was ejected
        assert {r.body for r in replies} == {b.origin}
        assert elapsed < 2.0  # the stalled ones went to b after ~0.2 s, not at the 5 s timeout
        router = mesh.node(caller).router
        assert a.origin in router.outliers.ejected
        assert router.pick("svc.work") == b.origin  # out of rotation at this caller
        hang.set()


async def test_an_instance_that_keeps_failing_is_ejected_for_a_growing_interval() -> None:
    properties = {"outlier.failures": "3", "outlier.ejection": "0.2"}
    async with TestMesh(properties) as mesh:
        caller, a, _ = await two_instances(mesh, idempotent=False)

        async def broken(body: Any) -> Any:
            raise RuntimeError("broken")

        a.replace("svc.work", broken)
        router = mesh.node(caller).router
        statuses = Counter()
        for n in range(12):
            statuses[(await PostOffice(caller).request("svc.work", n, timeout=5)).status] += 1
        assert statuses[500] == 3 and statuses[200] == 9, statuses  # ejected after three in a row
        first_until = router.outliers.ejected[a.origin]
        await asyncio.sleep(0.25)  # back in rotation: it fails three more times and goes out for longer
        for n in range(8):
            await PostOffice(caller).request("svc.work", n, timeout=5)
        second_until = router.outliers.ejected[a.origin]
        assert second_until - first_until > 0.25  # 0.4 s the second time


async def test_deadlines_travel_across_the_mesh_and_expired_queued_work_never_runs() -> None:
    seen: list[float | None] = []
    async with TestMesh() as mesh:
        caller = await mesh.app("caller", FunctionRegistry())
        registry = FunctionRegistry()

        @registry.route("remote.report")
        async def report(body: Any) -> Any:
            seen.append(PostOffice().time_left(60))
            return "ok"

        @registry.route("remote.single", instances=1)
        async def single(body: Any) -> Any:
            await asyncio.sleep(0.3)
            return body

        callee = await mesh.app("callee", registry)
        assert (await PostOffice(caller).request("remote.report", timeout=0.8)).body == "ok"
        assert seen[0] is not None and 0.5 < seen[0] <= 0.8
        first = asyncio.create_task(PostOffice(caller).request("remote.single", 1, timeout=2))
        await mesh.until(lambda: callee.pool("remote.single").busy == 1, "the first running")  # type: ignore[union-attr]
        late = await PostOffice(caller).request("remote.single", 2, timeout=0.1, timeout_as_reply=True)
        assert late.status == 408
        assert (await first).body == 1
        await mesh.until(lambda: caller.late_replies == 1, "the 408 of the expired one, late")
        assert callee.pool("remote.single").expired == 1  # type: ignore[union-attr]
