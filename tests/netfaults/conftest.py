"""Fixtures: a network of namespaces (skipped where it cannot be made) and the broker on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netfaults._mesh import NetMesh
from tests.support.netns import Network


@pytest.fixture
def network() -> Iterator[Network]:
    with Network.create() as made:
        yield made


@pytest.fixture
def netmesh(network: Network, tmp_path: Path) -> Iterator[NetMesh]:
    with NetMesh(network, tmp_path) as running:
        yield running
