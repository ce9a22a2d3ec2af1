"""The development broker goes when the process that started it goes, however that process ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

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
    deadline = time.monotonic() + 5
    while alive(broker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(broker_pid):
        os.kill(broker_pid, signal.SIGKILL)
        pytest.fail("Tansu outlived the process that started it")
