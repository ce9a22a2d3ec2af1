"""Connectors: the network event streams the mesh rides on (`cloud.connector` = none | kafka | hazelcast).

Every connector implements :class:`Connector`, and `make_connector(config)` is the one place that picks one;
nothing outside this package knows which is in use. Envelope encoding, segmentation and loopback health sit
above the connector, in the mesh's event transport, so every connector gets them the same way. Connectors
know nothing of the mesh.
"""

from meshkit.connectors._base import Connector, ConnectorError, Latency, RecordHandler, Subscription
from meshkit.connectors._factory import CONNECTORS, connector_kind, make_connector

__all__ = [
    "CONNECTORS",
    "Connector",
    "ConnectorError",
    "Latency",
    "RecordHandler",
    "Subscription",
    "connector_kind",
    "make_connector",
]
