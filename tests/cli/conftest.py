"""The real ``meshkit`` command in a process of its own, for the tests of tests/cli/.

    result = meshkit("call", "test.echo", "--endpoint", server.event_url)
    assert (result.returncode, result.stdout) == (0, "...")

It runs the console script of this environment (``python -m meshkit.cli`` where there is none) from the
repository root, without ``MESH_API_KEY`` or ``MESHKIT_ENDPOINT`` unless a test gives them in ``env``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.servers import REPO, UvicornProcess

SCRIPT = Path(sys.executable).with_name("meshkit")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "meshkit.cli"]

Meshkit = Callable[..., subprocess.CompletedProcess[str]]


def run_meshkit(
    *args: str, env: Mapping[str, str] | None = None, input: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("MESH_API_KEY", "MESHKIT_ENDPOINT")}
    environ.update({"PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run(
        [*COMMAND, *args],
        cwd=REPO,
        env=environ,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def meshkit() -> Meshkit:
    return run_meshkit


@pytest.fixture(scope="package")
def target() -> Iterator[UvicornProcess]:
    """tests.apps.http_target (echo, slow, conflict, crash, private, ...) with no mesh key."""
    with UvicornProcess("tests.apps.http_target:app", properties={"cloud.connector": "none"}) as server:
        yield server
