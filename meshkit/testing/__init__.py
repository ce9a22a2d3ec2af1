"""Testing kit: meshkit apps in a test's own process, with no broker, monitor or server.

- `TestMesh`: several apps meshed in one process, each with its own platform, origin and routing table,
  on the in-memory connector; `stub(route, handler)` replaces a route for a block.
- `running_platform(...)`: one app's platform, started and equipped as in a real app.
- the pytest fixture `meshkit_mesh`: ``pytest_plugins = ["meshkit.testing.plugin"]``.
"""

from meshkit.testing._control import ControlPlane, InProcessPresence, MeshFull
from meshkit.testing._mesh import TEST_PROPERTIES, TestMesh
from meshkit.testing._platform import isolated_config, running_platform, specs_of

__all__ = [
    "TEST_PROPERTIES",
    "ControlPlane",
    "InProcessPresence",
    "MeshFull",
    "TestMesh",
    "isolated_config",
    "running_platform",
    "specs_of",
]
