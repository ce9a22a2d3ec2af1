"""The service mesh: each app's presence, its copy of the distributed routing table, and the event transport
over a connector; with the pieces of the protocol (docs/protocol/) a control plane such as the presence
monitor speaks. It knows connectors only by their protocol, never Kafka or Hazelcast by name.
"""

from meshkit.mesh._address import PATH as DIRECT_PATH
from meshkit.mesh._address import direct_address, direct_listener
from meshkit.mesh._callers import CallerProofs, NotProven
from meshkit.mesh._cards import CARD, contracts_digest
from meshkit.mesh._direct import DirectLinks
from meshkit.mesh._frames import (
    DEFAULT_SEGMENT_SIZE,
    EVERYONE,
    RECIPIENT,
    FrameError,
    control_record,
    parse,
)
from meshkit.mesh._link import Link, LinkClosed, Socket
from meshkit.mesh._loopback import Loopback
from meshkit.mesh._node import HEALTH_ROUTE, MeshNode, join_mesh
from meshkit.mesh._peers import parse_contracts
from meshkit.mesh._presence import Member, OnNotice, OnReady, Presence, PresenceClient, PresenceFactory
from meshkit.mesh._router import MeshRouter
from meshkit.mesh._table import Peer, RoutingTable
from meshkit.mesh._topics import MONITOR_TOPIC, TopicLayout, VirtualTopic, mesh_settings
from meshkit.mesh._vouched import ORIGIN
from meshkit.mesh._watchdog import EXIT_CONNECTOR_LOST, ConnectorWatchdog

__all__ = [
    "CARD",
    "DEFAULT_SEGMENT_SIZE",
    "DIRECT_PATH",
    "EVERYONE",
    "EXIT_CONNECTOR_LOST",
    "HEALTH_ROUTE",
    "MONITOR_TOPIC",
    "ORIGIN",
    "RECIPIENT",
    "CallerProofs",
    "ConnectorWatchdog",
    "DirectLinks",
    "FrameError",
    "Link",
    "LinkClosed",
    "Loopback",
    "Member",
    "MeshNode",
    "MeshRouter",
    "NotProven",
    "OnNotice",
    "OnReady",
    "Peer",
    "Presence",
    "PresenceClient",
    "PresenceFactory",
    "RoutingTable",
    "Socket",
    "TopicLayout",
    "VirtualTopic",
    "contracts_digest",
    "control_record",
    "direct_address",
    "direct_listener",
    "join_mesh",
    "mesh_settings",
    "parse",
    "parse_contracts",
]
