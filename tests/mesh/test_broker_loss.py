"""Fault: the broker stops and comes back empty (memory storage forgets every topic).

meshkit's answer is to exit, not to limp: every app and monitor whose connector stays unusable for
`connector.watchdog.exit.after` seconds logs why and exits with code 75 (EX_TEMPFAIL), so the orchestrator
restarts it; restarted, the mesh works again. Requests issued during the fault end in an error, never a hang.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from meshkit.devbroker import DevBroker
from meshkit.mesh import EXIT_CONNECTOR_LOST
from tests.support.eventually import wait_until
from tests.support.servers import UvicornProcess, free_port

WATCHDOG = {"connector.watchdog.interval": "0.5", "connector.watchdog.exit.after": "3"}


def _mesh(stack: ExitStack, bootstrap: str, monitor_port: int) -> tuple[UvicornProcess, ...]:
    common = {"bootstrap.servers": bootstrap, **WATCHDOG}
    app = {**common, "cloud.connector": "kafka", "presence.url": f"ws://127.0.0.1:{monitor_port}/ws/presence"}
    return (
        stack.enter_context(UvicornProcess("presence_server.main:app", port=monitor_port, properties=common)),
        stack.enter_context(UvicornProcess("example_services.lambda_example.main:app", properties=app)),
        stack.enter_context(UvicornProcess("example_services.rest_example.main:app", properties=app)),
    )


def _mesh_call_ok(rest: UvicornProcess) -> bool:
    try:
        return httpx.get(f"{rest.url}/api/pojo/mesh/1", timeout=10, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def broker_port() -> Iterator[int]:
    yield free_port()


def test_a_lost_broker_makes_every_process_exit_75_and_a_restart_recovers(broker_port: int) -> None:
    monitor_port = free_port()
    broker = DevBroker(port=broker_port).start()
    try:
        with ExitStack() as stack:
            processes = _mesh(stack, broker.bootstrap, monitor_port)
            rest = processes[2]
            wait_until(lambda: _mesh_call_ok(rest), timeout=30, interval=0.1, what="the mesh call works")

            broker.stop()
            # an error, in bounded time: the bound is the call's own, a hang ends in httpx's timeout error
            during = httpx.get(f"{rest.url}/api/pojo/mesh/1", timeout=10, trust_env=False)
            assert during.status_code in (404, 408, 503), during.text

            wait_until(
                lambda: all(not p.running for p in processes),
                timeout=30,
                interval=0.1,
                what="every process exits",
            )
            for process in processes:
                assert process.returncode == EXIT_CONNECTOR_LOST, process.log_tail()
                assert f"exiting with code {EXIT_CONNECTOR_LOST}" in process.log_text()

        broker = DevBroker(port=broker_port).start()  # the broker is back, empty
        with ExitStack() as stack:
            rest = _mesh(stack, broker.bootstrap, monitor_port)[2]  # the orchestrator restarts them
            wait_until(
                lambda: _mesh_call_ok(rest),
                timeout=30,
                interval=0.1,
                what="the mesh call works again after the restart",
            )
    finally:
        broker.stop()
