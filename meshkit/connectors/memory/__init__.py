"""The in-memory connector (`cloud.connector=none`): a broker inside this process, no network.

`MemoryConnector()` attaches to a process-wide default `MemoryBroker`; several
`MemoryConnector(broker=b)` sharing one broker form a mesh inside one process (unit tests of the mesh).
"""

from meshkit.connectors.memory._broker import DEFAULT_MAX_RECORD_BYTES, MemoryBroker
from meshkit.connectors.memory._connector import MemoryConnector, MemorySubscription

__all__ = ["DEFAULT_MAX_RECORD_BYTES", "MemoryBroker", "MemoryConnector", "MemorySubscription"]
