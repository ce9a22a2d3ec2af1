"""The pytest fixture of meshkit.testing: ``pytest_plugins = ["meshkit.testing.plugin"]`` in a conftest.py.

``meshkit_mesh`` is a TestMesh for the test, closed after it (needs pytest-asyncio, in auto mode or with the
test marked ``@pytest.mark.asyncio``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from meshkit.testing._mesh import TestMesh


@pytest_asyncio.fixture
async def meshkit_mesh() -> AsyncIterator[TestMesh]:
    """Apps meshed in this test's process: ``orders = await meshkit_mesh.app("orders", registry)``."""
    async with TestMesh() as mesh:
        yield mesh
