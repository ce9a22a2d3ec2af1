"""The development broker goes when the process that started it goes, however that process ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.support.eventually import wait_until

pytestmark = pytest.mark.kafka

STARTER = """
import os, sys, time
from meshkit.devbroker import DevBroker
broker = DevBroker().start()
print(broker._proc.pid, flush=True)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"  # a zombie is gone, only not yet reaped
    except FileNotFoundError:
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_a_broker_whose_starter_is_killed_stops_too() -> None:
    starter = subprocess.Popen([sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True)
    assert starter.stdout is not None
    broker_pid = int(starter.stdout.readline())
    assert alive(broker_pid)
    os.kill(starter.pid, signal.SIGKILL)  # no teardown, no atexit
    starter.wait()
    starter.stdout.close()
    try:
        wait_until(
            lambda: not alive(broker_pid), timeout=5, what="Tansu gone with the process that started it"
        )
    except AssertionError:
        os.kill(broker_pid, signal.SIGKILL)  # not left running after the test
        raise


def test_make_kafka_runs_the_broker_until_interrupted() -> None:
    """`make kafka` is `python -m meshkit.devbroker`: it serves until Ctrl-C, then stops its broker."""
    from meshkit.devbroker import free_port

    port = free_port()
    runner = subprocess.Popen(
        [sys.executable, "-m", "meshkit.devbroker", "--port", str(port)], stdout=subprocess.PIPE, text=True
    )
    assert runner.stdout is not None
    try:
        ready = f"Tansu Kafka-compatible broker on 127.0.0.1:{port}"
        lines = []  # Tansu's own lines come first: they share the terminal
        while ready not in lines and len(lines) < 50 and runner.poll() is None:
            lines.append(runner.stdout.readline().strip())
        assert ready in lines, lines
    finally:
        runner.send_signal(signal.SIGINT)
        assert runner.wait(10) == 0
        runner.stdout.close()
