"""Connectors: the network event streams the mesh rides on (`cloud.connector` = none | kafka | hazelcast).

Every connector implements :class:`meshkit.connectors.Connector`; nothing outside this package knows which
one is in use. Envelope encoding, segmentation and loopback health sit above the connector, in the shared
event transport, so every connector gets them the same way.
"""

from meshkit.connectors._base import Connector, ConnectorError, RecordHandler, Subscription

__all__ = ["Connector", "ConnectorError", "RecordHandler", "Subscription"]
