"""Fault: the broker stops and comes back empty (memory storage forgets every topic).

meshkit's answer is to exit, not to limp: every app and monitor whose connector stays unusable for
`connector.watchdog.exit.after` seconds logs why and exits with code 75 (EX_TEMPFAIL), so the orchestrator
restarts it; restarted, the mesh works again. Requests issued during the fault end in an error, never a hang.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from meshkit.devbroker import DevBroker
from meshkit.mesh import EXIT_CONNECTOR_LOST
from tests.servers import UvicornProcess, free_port

WATCHDOG = {"connector.watchdog.interval": "0.5", "connector.watchdog.exit.after": "3"}


def _mesh(stack: ExitStack, bootstrap: str, monitor_port: int) -> tuple[UvicornProcess, ...]:
    common = {"bootstrap.servers": bootstrap, **WATCHDOG}
    app = {**common, "cloud.connector": "kafka", "presence.url": f"ws://127.0.0.1:{monitor_port}/ws/presence"}
    return (
        stack.enter_context(UvicornProcess("presence_server.main:app", port=monitor_port, properties=common)),
        stack.enter_context(UvicornProcess("example_services.lambda_example.main:app", properties=app)),
        stack.enter_context(UvicornProcess("example_services.rest_example.main:app", properties=app)),
    )


def _until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    pytest.fail(f"not within {timeout} s: {what}")


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
            _until(lambda: _mesh_call_ok(rest), 30, "the mesh call works")

            broker.stop()
            started = time.monotonic()
            during = httpx.get(f"{rest.url}/api/pojo/mesh/1", timeout=30, trust_env=False)
            assert during.status_code in (404, 408, 503), during.text  # an error, in bounded time
            assert time.monotonic() - started < 10

            _until(lambda: all(not p.running for p in processes), 30, "every process exits")
            for process in processes:
                assert process.returncode == EXIT_CONNECTOR_LOST, process.log_tail()
                assert f"exiting with code {EXIT_CONNECTOR_LOST}" in process.log_text()

        broker = DevBroker(port=broker_port).start()  # the broker is back, empty
        with ExitStack() as stack:
            rest = _mesh(stack, broker.bootstrap, monitor_port)[2]  # the orchestrator restarts them
            _until(lambda: _mesh_call_ok(rest), 30, "the mesh call works again after the restart")
    finally:
        broker.stop()
