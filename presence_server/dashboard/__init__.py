"""The mesh dashboard of the presence monitor: a live page at `/`, its data at `/api/mesh`."""

from presence_server.dashboard._dashboard import Dashboard
from presence_server.dashboard._routes import RouteBook

__all__ = ["Dashboard", "RouteBook"]
